"""The FastAPI tutorial's lessons on stallscope's paths, so `stallscope experiment --url` and
the load in bench/peers/run.py measure both the same way, request for request.

Each stallscope variant maps to the FastAPI form that teaches the same thing:

    /sleep/async           async def + await asyncio.sleep        (yields)
    /sleep/blocking        async def + time.sleep                 (holds the event loop)
    /sleep/spawn-blocking  def + time.sleep                       (FastAPI's threadpool)
    /sleep/block-in-place  async def + await run_in_threadpool    (an explicit hand-off)
    /cpu/inline            async def + a SHA-256 loop             (holds the event loop)
    /cpu/spawn-blocking    def + the same loop                    (FastAPI's threadpool; the
                                                                   GIL decides how parallel)
    /cpu/rayon             a ProcessPoolExecutor                  (real parallelism)
    /upstream/async        httpx.AsyncClient                      (the aiohttp lesson)
    /upstream/blocking     requests inside async def
    /upstream/spawn-blocking  requests inside def
    /db/{async,raw}/...    aiosqlite                              (the aiomysql lesson)
    /db/blocking/...       sqlite3 inside async def
    /db/spawn-blocking/... sqlite3 through run_in_threadpool

Run: uvicorn fastapi_app:app --app-dir bench/peers, with PEER_UPSTREAM_URL (a
`stallscope upstream`) and PEER_DATABASE (a SQLite file; created with one user).
"""

import asyncio
import hashlib
import os
import sqlite3
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import asynccontextmanager

import aiosqlite
import httpx
import requests
from fastapi import FastAPI, HTTPException, Query
from starlette.concurrency import run_in_threadpool

UPSTREAM = os.environ.get("PEER_UPSTREAM_URL", "http://127.0.0.1:3001")
DATABASE = os.environ.get("PEER_DATABASE", "peer.db")
MAX_MS = 10_000


def sha256_rounds(iterations: int) -> bytes:
    digest = bytes(32)
    for _ in range(iterations):
        digest = hashlib.sha256(digest).digest()
    return digest


def sqlite_sleep(ms: int) -> int:
    time.sleep(ms / 1000)
    return ms


def sqlite_connect() -> sqlite3.Connection:
    # check_same_thread=False: a `def` handler may run on any threadpool thread.
    connection = sqlite3.connect(DATABASE, check_same_thread=False)
    connection.create_function("stallscope_sleep", 1, sqlite_sleep)
    return connection


@asynccontextmanager
async def lifespan(app: FastAPI):
    with sqlite_connect() as connection:
        connection.execute(
            "CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, username TEXT NOT NULL, "
            "email TEXT NOT NULL)"
        )
        connection.execute(
            "INSERT OR IGNORE INTO users (id, username, email) VALUES (1, 'alice', 'alice@example.com')"
        )
    app.state.http = httpx.AsyncClient(timeout=30)
    # Made by the first /cpu/rayon request: the other measurements (memory above all) are of
    # the web server, not of a pool of idle processes.
    app.state.processes = None
    yield
    await app.state.http.aclose()
    if app.state.processes:
        app.state.processes.shutdown()


app = FastAPI(lifespan=lifespan)


def answer(work: str, variant: str, requested: dict, started: float, handler_thread: str, work_thread: str):
    return {
        "work": work,
        "variant": variant,
        "requested": requested,
        "elapsed_ms": (time.perf_counter() - started) * 1000,
        "handler_thread": handler_thread,
        "work_thread": work_thread,
    }


def this_thread() -> str:
    return threading.current_thread().name


@app.get("/healthz")
async def healthz():
    return {"status": "ok"}


@app.get("/hello")
async def hello():
    return {"message": "hello"}


Ms = Query(1000, ge=0, le=MAX_MS)


# --- sleep ---------------------------------------------------------------------------------


@app.get("/sleep/async")
async def sleep_async(ms: int = Ms):
    started = time.perf_counter()
    await asyncio.sleep(ms / 1000)
    return answer("sleep", "async", {"ms": ms}, started, this_thread(), this_thread())


@app.get("/sleep/blocking")
async def sleep_blocking(ms: int = Ms):
    started = time.perf_counter()
    time.sleep(ms / 1000)  # the tutorial's mistake: the event loop waits with it
    return answer("sleep", "blocking", {"ms": ms}, started, this_thread(), this_thread())


@app.get("/sleep/spawn-blocking")
def sleep_threadpool(ms: int = Ms):
    started = time.perf_counter()
    time.sleep(ms / 1000)
    return answer("sleep", "spawn-blocking", {"ms": ms}, started, this_thread(), this_thread())


@app.get("/sleep/block-in-place")
async def sleep_handed_off(ms: int = Ms):
    started = time.perf_counter()
    handler = this_thread()
    worker = await run_in_threadpool(lambda: (time.sleep(ms / 1000), this_thread())[1])
    return answer("sleep", "block-in-place", {"ms": ms}, started, handler, worker)


# --- cpu -----------------------------------------------------------------------------------

Iterations = Query(20_000_000, ge=1, le=200_000_000)


@app.get("/cpu/inline")
async def cpu_inline(iterations: int = Iterations):
    started = time.perf_counter()
    sha256_rounds(iterations)
    return answer("cpu", "inline", {"iterations": iterations}, started, this_thread(), this_thread())


@app.get("/cpu/spawn-blocking")
def cpu_threadpool(iterations: int = Iterations):
    started = time.perf_counter()
    sha256_rounds(iterations)
    return answer("cpu", "spawn-blocking", {"iterations": iterations}, started, this_thread(), this_thread())


@app.get("/cpu/rayon")
async def cpu_processes(iterations: int = Iterations):
    started = time.perf_counter()
    if app.state.processes is None:
        app.state.processes = ProcessPoolExecutor(max_workers=os.cpu_count())
    await asyncio.get_running_loop().run_in_executor(app.state.processes, sha256_rounds, iterations)
    return answer("cpu", "rayon", {"iterations": iterations}, started, this_thread(), "process pool")


# --- upstream ------------------------------------------------------------------------------


@app.get("/upstream/async")
async def upstream_async(ms: int = Ms):
    started = time.perf_counter()
    response = await app.state.http.get(f"{UPSTREAM}/slow", params={"ms": ms})
    if response.status_code != 200:
        raise HTTPException(502, f"upstream answered {response.status_code}")
    return answer("upstream", "async", {"ms": ms}, started, this_thread(), this_thread())


@app.get("/upstream/blocking")
async def upstream_blocking(ms: int = Ms):
    started = time.perf_counter()
    response = requests.get(f"{UPSTREAM}/slow", params={"ms": ms}, timeout=30)
    if response.status_code != 200:
        raise HTTPException(502, f"upstream answered {response.status_code}")
    return answer("upstream", "blocking", {"ms": ms}, started, this_thread(), this_thread())


@app.get("/upstream/spawn-blocking")
def upstream_threadpool(ms: int = Ms):
    started = time.perf_counter()
    response = requests.get(f"{UPSTREAM}/slow", params={"ms": ms}, timeout=30)
    if response.status_code != 200:
        raise HTTPException(502, f"upstream answered {response.status_code}")
    return answer("upstream", "spawn-blocking", {"ms": ms}, started, this_thread(), this_thread())


# --- database ------------------------------------------------------------------------------

SLEEP_SQL = "SELECT stallscope_sleep(?)"
USER_SQL = "SELECT id, username, email FROM users WHERE id = ?"


async def aiosqlite_query(sql: str, parameter: int):
    # One connection per request, like a pool checkout: aiosqlite runs each connection's
    # queries on that connection's own thread, one at a time.
    async with aiosqlite.connect(DATABASE) as connection:
        await connection.create_function("stallscope_sleep", 1, sqlite_sleep)
        async with connection.execute(sql, (parameter,)) as cursor:
            return await cursor.fetchone()


def sqlite3_query(sql: str, parameter: int):
    with sqlite_connect() as connection:
        return connection.execute(sql, (parameter,)).fetchone()


def user_or_404(row, id: int):
    if row is None:
        raise HTTPException(404, f"there is no user with id {id}")
    return {"id": row[0], "username": row[1], "email": row[2]}


@app.get("/db/{variant}/sleep")
async def db_sleep(variant: str, ms: int = Ms):
    started = time.perf_counter()
    if variant in ("async", "raw"):
        await aiosqlite_query(SLEEP_SQL, ms)
    elif variant == "blocking":
        sqlite3_query(SLEEP_SQL, ms)
    elif variant == "spawn-blocking":
        await run_in_threadpool(sqlite3_query, SLEEP_SQL, ms)
    else:
        raise HTTPException(404, "variants: async, raw, blocking, spawn-blocking")
    return answer("db", variant, {"ms": ms}, started, this_thread(), this_thread())


@app.get("/db/{variant}/users/{id}")
async def db_user(variant: str, id: int):
    if variant in ("async", "raw"):
        return user_or_404(await aiosqlite_query(USER_SQL, id), id)
    if variant == "blocking":
        return user_or_404(sqlite3_query(USER_SQL, id), id)
    if variant == "spawn-blocking":
        return user_or_404(await run_in_threadpool(sqlite3_query, USER_SQL, id), id)
    raise HTTPException(404, "variants: async, raw, blocking, spawn-blocking")

-- The users table of the database lessons (SQLite dialect).
-- INTEGER PRIMARY KEY is SQLite's 64-bit rowid; AUTOINCREMENT keeps deleted ids from being
-- reused, as PostgreSQL's and MySQL's sequences do.
CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL,
    email TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT users_username_key UNIQUE (username)
);

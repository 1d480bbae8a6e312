//! The code beside each variant on the live page, cut from `docs/lessons.md` so the page and
//! the lessons never disagree.
//!
//! A Rust snippet starts at a comment naming the variant's path (`// /sleep/blocking: …`), a
//! FastAPI one at a line marked `stallscope: /sleep/blocking`; each runs to the next blank
//! line, the next such mark, or the end of its code block.

use std::collections::HashMap;
use std::sync::LazyLock;

const LESSONS_DOC: &str = include_str!("../../docs/lessons.md");

/// A variant's Rust and FastAPI code, where the doc has them.
type Pair = (Option<String>, Option<String>);

/// `/lesson/variant` → its pair.
static SNIPPETS: LazyLock<HashMap<String, Pair>> = LazyLock::new(|| cut(LESSONS_DOC));

/// The Rust and the FastAPI code of `lesson`'s `variant`, where the lessons doc has them.
pub fn of(lesson: &str, variant: &str) -> Pair {
    SNIPPETS
        .get(&format!("/{lesson}/{variant}"))
        .cloned()
        .unwrap_or_default()
}

fn cut(doc: &str) -> HashMap<String, Pair> {
    let mut snippets: HashMap<String, Pair> = HashMap::new();
    let mut language: Option<&str> = None;
    let mut current: Option<(String, Vec<&str>)> = None;
    let mut finish = |current: &mut Option<(String, Vec<&str>)>, language: Option<&str>| {
        if let Some((key, lines)) = current.take() {
            let code = lines.join("\n").trim_end().to_owned();
            let entry = snippets.entry(key).or_default();
            match language {
                Some("rust") => entry.0 = Some(code),
                _ => entry.1 = Some(code),
            }
        }
    };
    for line in doc.lines() {
        if let Some(fence) = line.strip_prefix("```") {
            finish(&mut current, language);
            language = if language.is_some() {
                None
            } else {
                Some(match fence {
                    "rust" => "rust",
                    "python" => "python",
                    _ => "other",
                })
            };
            continue;
        }
        let mark = match language {
            Some("rust") => line
                .strip_prefix("// ")
                .and_then(|rest| rest.split_once(':'))
                .map(|(path, _)| path)
                .filter(|path| path.starts_with('/') && !path.contains(' ')),
            Some("python") => line
                .split_once("stallscope: ")
                .map(|(_, path)| path.trim())
                .filter(|path| path.starts_with('/')),
            _ => None,
        };
        if let Some(path) = mark {
            finish(&mut current, language);
            current = Some((path.to_owned(), Vec::new()));
        } else if line.trim().is_empty() {
            finish(&mut current, language);
            continue;
        }
        if let Some((_, lines)) = &mut current {
            // The page shows the code, not the mark that places it.
            let shown = match line.split_once("stallscope: ") {
                Some((code, _)) => code.trim_end().trim_end_matches('#').trim_end(),
                None => line,
            };
            lines.push(shown);
        }
    }
    snippets
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::LESSONS;

    #[test]
    fn every_variant_has_its_rust_code_and_the_tutorials_stalling_pairs_their_fastapi_code() {
        let mut missing = Vec::new();
        for lesson in LESSONS.iter().filter(|l| l.name != "db") {
            for variant in lesson.variants {
                let (rust, _) = of(lesson.name, variant.name);
                if rust.is_none() {
                    missing.push(format!(
                        "/{}/{}: no Rust snippet",
                        lesson.name, variant.name
                    ));
                }
            }
        }
        for (lesson, variant) in [
            ("sleep", "blocking"),
            ("sleep", "spawn-blocking"),
            ("sleep", "async"),
            ("cpu", "inline"),
            ("upstream", "blocking"),
            ("upstream", "async"),
            ("db", "raw"),
            ("db", "async"),
        ] {
            if of(lesson, variant).1.is_none() {
                missing.push(format!("/{lesson}/{variant}: no FastAPI snippet"));
            }
        }
        assert!(missing.is_empty(), "{missing:#?}");
    }

    #[test]
    fn snippets_are_the_code_under_their_mark() {
        let (rust, python) = of("sleep", "blocking");
        let rust = rust.expect("rust");
        assert!(rust.starts_with("// /sleep/blocking: the bug."), "{rust}");
        assert!(rust.contains("std::thread::sleep(duration);"), "{rust}");
        assert!(!rust.contains("spawn-blocking"), "one variant only: {rust}");
        let python = python.expect("python");
        assert_eq!(
            python,
            "@app.get(\"/async-sleep\")\nasync def async_sleep():\n    time.sleep(1)            # blocks the event loop: every other request waits\n    return {\"slept\": 1}"
        );
        let (_, raw) = of("db", "raw");
        let raw = raw.expect("aiomysql");
        assert!(raw.starts_with("# aiomysql\n"), "{raw}");
        assert!(raw.contains("await cur.execute"), "{raw}");
    }
}

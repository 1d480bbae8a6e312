//! The Markdown docs render as written and stay true to the code.
//!
//! README.md and every docs/*.md are parsed with pulldown-cmark (GitHub's tables on) and
//! checked for what GitHub renders silently wrong: a table broken by a blank line (its rows
//! after the blank render as a paragraph of pipes), a relative link to a file that does not
//! exist, and an anchor (`#frag`, `file.md#frag`) that no heading of the target produces.
//! Then a few facts the lessons state are compared with the code: the `serve` flags' defaults,
//! the experiment's verdict names and texts, and the `work` values of the lessons' report.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use clap::CommandFactory;
use pulldown_cmark::{Event, LinkType, Options, Parser, Tag, TagEnd};
use stallscope::cli::Cli;
use stallscope::experiment::{Lesson, Verdict};

/// The repository root: README.md and docs/ live here.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and docs/*.md, sorted.
fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    let docs = std::fs::read_dir(root().join("docs")).expect("docs/ is readable");
    let mut in_docs: Vec<PathBuf> = docs
        .map(|entry| entry.expect("a docs/ entry is readable").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    in_docs.sort();
    files.extend(in_docs);
    files
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// `path` relative to the repository root, for messages.
fn shown(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// GitHub's extensions that change what a block is (tables above all).
fn gfm() -> Options {
    Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_FOOTNOTES
}

/// A link's destination and the 1-based line it starts on.
#[derive(Debug)]
struct Link {
    line: usize,
    destination: String,
}

/// What the checks need from one rendered Markdown document.
#[derive(Debug, Default)]
struct Rendered {
    /// Lines starting with `|` that ended up outside every table, code block and HTML block.
    stray_table_rows: Vec<usize>,
    /// Links and images, as written (reference links resolved).
    links: Vec<Link>,
    /// Every anchor a link may point at: the headings' GitHub slugs and explicit
    /// `<a id="…">` / `<a name="…">` anchors.
    anchors: HashSet<String>,
}

/// 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset].bytes().filter(|&b| b == b'\n').count() + 1
}

fn render(markdown: &str) -> Rendered {
    let mut rendered = Rendered::default();
    // Byte ranges where a line starting with `|` is expected: tables, and blocks whose content
    // is not Markdown (code, raw HTML).
    let mut tables: Vec<Range<usize>> = Vec::new();
    let mut exempt: Vec<Range<usize>> = Vec::new();
    let mut slugger = Slugger::default();
    // The text of the heading being read, if any; text inside an image in it does not count.
    let mut heading: Option<String> = None;
    let mut image_depth = 0usize;

    for (event, range) in Parser::new_ext(markdown, gfm()).into_offset_iter() {
        match event {
            Event::Start(Tag::Table(_)) => tables.push(range),
            Event::Start(Tag::CodeBlock(_) | Tag::HtmlBlock) => exempt.push(range),
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::End(TagEnd::Heading(_)) => {
                if let Some(text) = heading.take() {
                    rendered.anchors.insert(slugger.slug(&text));
                }
            }
            // `<someone@example.com>` is a mailto link whose destination lacks the scheme.
            Event::Start(Tag::Link {
                link_type,
                dest_url,
                ..
            }) if link_type != LinkType::Email => {
                rendered.links.push(Link {
                    line: line_of(markdown, range.start),
                    destination: dest_url.to_string(),
                });
            }
            Event::Start(Tag::Image { dest_url, .. }) => {
                image_depth += 1;
                rendered.links.push(Link {
                    line: line_of(markdown, range.start),
                    destination: dest_url.to_string(),
                });
            }
            Event::End(TagEnd::Image) => image_depth = image_depth.saturating_sub(1),
            Event::Text(text) | Event::Code(text) => {
                if let Some(heading) = heading.as_mut().filter(|_| image_depth == 0) {
                    heading.push_str(&text);
                }
            }
            Event::Html(html) | Event::InlineHtml(html) => {
                rendered.anchors.extend(html_anchors(&html));
            }
            _ => {}
        }
    }

    let mut offset = 0;
    for line in markdown.split_inclusive('\n') {
        let indent = line.len() - line.trim_start().len();
        let start = offset + indent;
        offset += line.len();
        if !line.trim_start().starts_with('|') {
            continue;
        }
        let inside = |ranges: &[Range<usize>]| ranges.iter().any(|r| r.contains(&start));
        if !inside(&tables) && !inside(&exempt) {
            rendered.stray_table_rows.push(line_of(markdown, start));
        }
    }
    rendered
}

/// GitHub's heading ids (github-slugger): lowercase; drop every character that is not a
/// letter, a digit, `_`, `-` or a space (non-ASCII letters such as Chinese stay); each space
/// becomes `-`. A repeated slug gets `-1`, `-2`, … in order.
#[derive(Debug, Default)]
struct Slugger {
    occurrences: HashMap<String, usize>,
}

impl Slugger {
    fn slug(&mut self, heading: &str) -> String {
        let base = github_slug(heading);
        let mut slug = base.clone();
        while self.occurrences.contains_key(&slug) {
            let count = self.occurrences.entry(base.clone()).or_insert(0);
            *count += 1;
            slug = format!("{base}-{count}");
        }
        self.occurrences.insert(slug.clone(), 0);
        slug
    }
}

fn github_slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter(|&c| c.is_alphanumeric() || matches!(c, '_' | '-' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The `id` and `name` values of every `<a …>` tag in an HTML fragment.
fn html_anchors(html: &str) -> Vec<String> {
    let lower = html.to_ascii_lowercase();
    let mut anchors = Vec::new();
    let mut rest = 0;
    while let Some(found) = lower[rest..].find("<a") {
        let tag_start = rest + found + 2;
        let tag_end = lower[tag_start..]
            .find('>')
            .map_or(lower.len(), |end| tag_start + end);
        rest = tag_end;
        // `<a` must be the whole tag name (not `<abbr`).
        if !lower[tag_start..].starts_with(|c: char| c.is_ascii_whitespace()) {
            continue;
        }
        let tag = &html[tag_start..tag_end];
        let tag_lower = &lower[tag_start..tag_end];
        for attribute in ["id", "name"] {
            let mut from = 0;
            while let Some(at) = tag_lower[from..].find(attribute) {
                let name_start = from + at;
                from = name_start + attribute.len();
                let preceded_by_space = tag_lower[..name_start].ends_with(char::is_whitespace);
                let after = tag_lower[from..].trim_start();
                if !preceded_by_space || !after.starts_with('=') {
                    continue;
                }
                let value_start = tag.len() - after.len() + 1;
                let value = tag[value_start..].trim_start();
                let quoted = value
                    .strip_prefix('"')
                    .and_then(|v| v.split_once('"'))
                    .or_else(|| value.strip_prefix('\'').and_then(|v| v.split_once('\'')))
                    .map(|(inner, _)| inner);
                let unquoted = || value.split(|c: char| c.is_whitespace() || c == '/').next();
                if let Some(anchor) = quoted.or_else(unquoted).filter(|a| !a.is_empty()) {
                    anchors.push(anchor.to_owned());
                }
            }
        }
    }
    anchors
}

/// `%E4%B8%AD` → `中`; anything that does not decode stays as written.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        });
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| text.to_owned())
}

/// Whether a destination names a scheme (`https:`, `mailto:`, …): not a file of this repository.
fn has_scheme(destination: &str) -> bool {
    let Some((scheme, _)) = destination.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// `a/./b/../c` → `a/c`, without touching the file system.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// What is wrong with one Markdown file, as `file:line: problem`.
#[derive(Debug, Default)]
struct Problems {
    tables: Vec<String>,
    links: Vec<String>,
    anchors: Vec<String>,
}

/// Checks `markdown`, the text of `file`, whose relative links resolve against `file`'s folder
/// (a link starting with `/` against `repo_root`, as GitHub does).
fn check(file: &Path, markdown: &str, repo_root: &Path) -> Problems {
    let rendered = render(markdown);
    let name = shown(file);
    let mut problems = Problems::default();
    for line in &rendered.stray_table_rows {
        problems.tables.push(format!(
            "{name}:{line}: a line starting with `|` is not part of any table (a blank line inside a table, or a table without its `|---|` row?)"
        ));
    }

    let folder = file.parent().unwrap_or(Path::new("."));
    let mut anchors_of: HashMap<PathBuf, HashSet<String>> = HashMap::new();
    for Link { line, destination } in &rendered.links {
        if has_scheme(destination) || destination.starts_with("//") {
            continue;
        }
        let (target, fragment) = match destination.split_once('#') {
            Some((target, fragment)) => (target, Some(percent_decode(fragment))),
            None => (destination.as_str(), None),
        };
        let target = target.split('?').next().unwrap_or_default();
        let target_path = if target.is_empty() {
            file.to_path_buf()
        } else {
            let decoded = percent_decode(target);
            match decoded.strip_prefix('/') {
                Some(from_root) => normalise(&repo_root.join(from_root)),
                None => normalise(&folder.join(&decoded)),
            }
        };
        if !target.is_empty() && !target_path.exists() {
            problems.links.push(format!(
                "{name}:{line}: `{destination}`: {} does not exist",
                shown(&target_path)
            ));
            continue;
        }
        let Some(fragment) = fragment.filter(|f| !f.is_empty()) else {
            continue;
        };
        let anchors = if target.is_empty() {
            &rendered.anchors
        } else if target_path.extension().is_some_and(|ext| ext == "md") {
            &*anchors_of
                .entry(target_path.clone())
                .or_insert_with(|| render(&read(&target_path)).anchors)
        } else {
            // Fragments into other files (`#L10` of source code) are GitHub's, not ours.
            continue;
        };
        if !anchors.contains(&fragment) {
            problems.anchors.push(format!(
                "{name}:{line}: `{destination}`: {} has no heading or anchor `{fragment}`",
                shown(&target_path)
            ));
        }
    }
    problems
}

fn all_problems() -> Vec<Problems> {
    markdown_files()
        .iter()
        .map(|file| check(file, &read(file), root()))
        .collect()
}

fn assert_none(kind: &str, problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{} {kind}:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn docs_have_no_broken_tables() {
    let problems = all_problems().into_iter().flat_map(|p| p.tables).collect();
    assert_none("broken tables", problems);
}

#[test]
fn docs_have_no_dead_relative_links() {
    let problems = all_problems().into_iter().flat_map(|p| p.links).collect();
    assert_none("dead links", problems);
}

#[test]
fn docs_have_no_dead_anchors() {
    let problems = all_problems().into_iter().flat_map(|p| p.anchors).collect();
    assert_none("dead anchors", problems);
}

// The checker itself, on small documents, so the checks above cannot pass by finding nothing.

fn check_inline(markdown: &str) -> Problems {
    check(
        Path::new("/nonexistent/inline.md"),
        markdown,
        Path::new("/nonexistent"),
    )
}

#[test]
fn checker_catches_a_table_broken_by_a_blank_line() {
    let markdown = "# T\n\n| flag | default |\n|---|---|\n| `--a` | `1` |\n\n| `--b` | `2` |\n| `--c` | `3` |\n\nAfter.\n";
    let problems = check_inline(markdown);
    assert_eq!(problems.tables.len(), 2, "{problems:?}");
    assert!(problems.tables[0].contains("inline.md:7:"), "{problems:?}");
    assert!(problems.tables[1].contains("inline.md:8:"), "{problems:?}");

    // A header row cut off from its delimiter row is no table at all.
    let headless = check_inline("| a | b |\n\n|---|---|\n| 1 | 2 |\n");
    assert_eq!(headless.tables.len(), 3, "{headless:?}");
}

#[test]
fn checker_passes_good_tables_and_pipes_in_code() {
    let markdown = "Intro.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |\n\n```text\n| not | a table |\n```\n\n    | indented | code |\n\n- item\n\n  | x | y |\n  |---|---|\n  | 1 | 2 |\n";
    let problems = check_inline(markdown);
    assert!(problems.tables.is_empty(), "{problems:?}");
}

#[test]
fn checker_catches_dead_anchors_and_accepts_live_ones() {
    let markdown = "# Top\n\n## Lessons 4–6: databases (`/db/{variant}`, users, login)\n\n## Top\n\n<a id=\"explicit\"></a>\n\n[a](#lessons-46-databases-dbvariant-users-login) [b](#top-1) [c](#explicit) [d](#top)\n\n\
                    [e](#nowhere) [f](#top-2)\n";
    let problems = check_inline(markdown);
    assert_eq!(problems.anchors.len(), 2, "{problems:?}");
    assert!(
        problems.anchors[0].contains("inline.md:11:"),
        "{problems:?}"
    );
    assert!(problems.anchors[0].contains("`#nowhere`"), "{problems:?}");
    assert!(problems.anchors[1].contains("`#top-2`"), "{problems:?}");
}

#[test]
fn github_slugs() {
    assert_eq!(
        github_slug("Lessons 4–6: databases (`/db/{variant}`, users, login)"),
        // What GitHub renders from the Markdown source: the code spans' text is kept, the
        // backticks are markup. From the rendered text the slug is the same.
        "lessons-46-databases-dbvariant-users-login"
    );
    let rendered = render("## Lessons 4–6: databases (`/db/{variant}/…`, `/users`, `/login`)\n");
    assert!(
        rendered
            .anchors
            .contains("lessons-46-databases-dbvariant-users-login"),
        "{rendered:?}"
    );
    assert_eq!(
        github_slug("第 4–6 课：数据库（`/db/{variant}/…`、`/users`、`/login`）"),
        "第-46-课数据库dbvariantuserslogin"
    );
    assert_eq!(github_slug("Why W+1?  Two  spaces"), "why-w1--two--spaces");
    assert_eq!(
        github_slug("snake_case and kebab-case"),
        "snake_case-and-kebab-case"
    );

    let mut slugger = Slugger::default();
    let slugs: Vec<String> = ["Notes", "Notes", "Notes-1", "Notes"]
        .iter()
        .map(|h| slugger.slug(h))
        .collect();
    assert_eq!(slugs, ["notes", "notes-1", "notes-1-1", "notes-2"]);
}

#[test]
fn checker_catches_dead_relative_links_and_anchors_in_other_files() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let docs = dir.path().join("docs");
    std::fs::create_dir(&docs).expect("docs/ in the temporary directory");
    std::fs::write(docs.join("other.md"), "# Other\n\n## Real heading\n").expect("write other.md");
    std::fs::write(dir.path().join("top.txt"), "x").expect("write top.txt");
    let file = docs.join("this.md");
    let markdown = "\
[ok](other.md) [ok](other.md#real-heading) [ok](../top.txt) [ok](/docs/other.md#other)
[web](https://example.com/missing.md) [mail](mailto:a@example.com) <b@example.com>
[dead](missing.md)
[dead anchor](other.md#fake-heading)
![dead image](img/none.png)
";
    let problems = check(&file, markdown, dir.path());
    assert_eq!(problems.links.len(), 2, "{problems:?}");
    assert!(problems.links[0].contains("this.md:3:"), "{problems:?}");
    assert!(problems.links[0].contains("missing.md"), "{problems:?}");
    assert!(problems.links[1].contains("this.md:5:"), "{problems:?}");
    assert_eq!(problems.anchors.len(), 1, "{problems:?}");
    assert!(
        problems.anchors[0].contains("this.md:4:") && problems.anchors[0].contains("fake-heading"),
        "{problems:?}"
    );
}

#[test]
fn html_anchor_forms() {
    assert_eq!(
        html_anchors("<a id=\"one\"></a><A NAME='two'>x</A><abbr id=\"no\">"),
        ["one", "two"]
    );
    assert_eq!(html_anchors("<a href=\"#x\" id=three>"), ["three"]);
}

// Facts the lessons state, against the code.

/// The default of a `serve` flag as clap declares it (not as the environment may override it).
fn flag_default(flag: &str) -> u64 {
    let command = Cli::command();
    let argument = command
        .get_arguments()
        .find(|arg| arg.get_long() == Some(flag))
        .unwrap_or_else(|| panic!("stallscope has no --{flag}"));
    let values = argument.get_default_values();
    let [value] = values else {
        panic!("--{flag} has {} default values", values.len());
    };
    value
        .to_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("--{flag}'s default {value:?} is not a whole number"))
}

/// Every default the text states for `flag`: the number after "default"/"默认" right after the
/// flag (`` `--flag` (default 10 000)``, `` `--flag`, default 10 000``, `` `--flag`（默认 10 000）``),
/// and the "default" column of any table row for the flag. Digits may be grouped with spaces,
/// commas or underscores. Returns (line, value) pairs.
fn stated_defaults(markdown: &str, flag: &str) -> Vec<(usize, u64)> {
    let mention = format!("`--{flag}`");
    let mut found = Vec::new();

    // Prose, possibly wrapped: read from each mention across line ends.
    for (at, _) in markdown.match_indices(&mention) {
        let after = &markdown[at + mention.len()..];
        let after = after.trim_start_matches(|c: char| c.is_whitespace() || "(（,，".contains(c));
        let Some(after) = ["default", "默认值", "默认"]
            .iter()
            .find_map(|word| after.strip_prefix(word))
        else {
            continue;
        };
        let after = after.trim_start_matches(|c: char| c.is_whitespace() || ":：".contains(c));
        if let Some(value) = leading_number(after) {
            found.push((line_of(markdown, at), value));
        }
    }

    // Tables: a header row with a "default" column, then rows whose first cell is the flag.
    // `table` is `None` outside a table, else the default column of the one being read.
    let mut table: Option<Option<usize>> = None;
    for (index, line) in markdown.lines().enumerate() {
        let trimmed = line.trim();
        if !trimmed.starts_with('|') {
            table = None;
            continue;
        }
        let cells: Vec<&str> = trimmed
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        let Some(default_column) = table else {
            table = Some(cells.iter().position(|cell| {
                matches!(cell.to_lowercase().as_str(), "default" | "默认值" | "默认")
            }));
            continue;
        };
        if cells.first() != Some(&mention.as_str()) {
            continue;
        }
        let value = default_column
            .and_then(|column| cells.get(column))
            .and_then(|cell| leading_number(cell.trim_matches('`')));
        if let Some(value) = value {
            found.push((index + 1, value));
        }
    }
    found
}

/// `10 000 ms` → 10000; `200_000_000` → 200000000. `None` unless the text starts with a digit.
fn leading_number(text: &str) -> Option<u64> {
    let mut digits = String::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_ascii_digit() {
            digits.push(c);
            chars.next();
        } else if !digits.is_empty() && matches!(c, ' ' | '\u{a0}' | '\u{202f}' | ',' | '_') {
            // A group separator only when a digit follows it.
            let mut ahead = chars.clone();
            ahead.next();
            if ahead.peek().is_some_and(char::is_ascii_digit) {
                chars.next();
            } else {
                break;
            }
        } else {
            break;
        }
    }
    digits.parse().ok()
}

#[test]
fn stated_default_forms() {
    let text = "cap `--max-sleep-ms`, default 10 000 ms; `--max-sleep-ms` must be ≥ `--ms`;\n\
                `--max-cpu-iterations`\n(default 200 000 000) and `--max-cpu-iterations`（默认 20 000 000）.\n\n\
                | flag | env | default |\n|---|---|---|\n| `--max-sleep-ms` | `X` | `10000` |\n";
    assert_eq!(
        stated_defaults(text, "max-sleep-ms"),
        [(1, 10_000), (7, 10_000)]
    );
    assert_eq!(
        stated_defaults(text, "max-cpu-iterations"),
        [(2, 200_000_000), (3, 20_000_000)]
    );
    assert_eq!(leading_number("1, 2"), Some(1));
}

/// The docs state the code's defaults for the request caps: the lessons (both languages) must
/// state them, and wherever README.md or docs/*.md state them, they must be right.
#[test]
fn docs_state_the_flags_real_defaults() {
    let must_state = [
        root().join("docs/lessons.md"),
        root().join("docs/lessons.zh-CN.md"),
    ];
    let mut wrong = Vec::new();
    for flag in ["max-cpu-iterations", "max-sleep-ms"] {
        let default = flag_default(flag);
        for file in markdown_files() {
            let stated = stated_defaults(&read(&file), flag);
            if stated.is_empty() && must_state.contains(&file) {
                wrong.push(format!("{}: never states --{flag}'s default", shown(&file)));
            }
            for (line, value) in stated {
                if value != default {
                    wrong.push(format!(
                        "{}:{line}: says --{flag} defaults to {value}; the code says {default}",
                        shown(&file)
                    ));
                }
            }
        }
    }
    assert_none("wrong defaults", wrong);
}

/// Every verdict. The match makes a new `Verdict` variant a compile error here until it is
/// listed (and so checked against the lessons).
fn every_verdict() -> [Verdict; 5] {
    let all = [
        Verdict::Parallel,
        Verdict::Serialised,
        Verdict::Contended,
        Verdict::Masked,
        Verdict::Failed,
    ];
    for verdict in all {
        match verdict {
            Verdict::Parallel
            | Verdict::Serialised
            | Verdict::Contended
            | Verdict::Masked
            | Verdict::Failed => {}
        }
    }
    all
}

/// Every lesson, listed the same way.
fn every_lesson() -> [Lesson; 4] {
    let all = [Lesson::Sleep, Lesson::Cpu, Lesson::Upstream, Lesson::Db];
    for lesson in all {
        match lesson {
            Lesson::Sleep | Lesson::Cpu | Lesson::Upstream | Lesson::Db => {}
        }
    }
    all
}

#[test]
fn lessons_name_every_verdict_the_experiment_emits() {
    let mut missing = Vec::new();
    for file in ["docs/lessons.md", "docs/lessons.zh-CN.md"] {
        let text = read(&root().join(file));
        for verdict in every_verdict() {
            let json = serde_json::to_value(verdict).expect("a verdict serialises");
            let name = json.as_str().expect("a verdict serialises as a string");
            if !text.contains(&format!("`{name}`")) {
                missing.push(format!(
                    "{file}: no `{name}` (the JSON verdict of {verdict:?})"
                ));
            }
            let printed = verdict.describe();
            if !text.contains(printed) {
                missing.push(format!(
                    "{file}: no \"{printed}\" (the printed verdict of {verdict:?})"
                ));
            }
        }
    }
    assert_none("verdicts missing from the lessons", missing);
}

#[test]
fn work_report_row_lists_every_lesson() {
    let mut missing = Vec::new();
    for file in ["docs/lessons.md", "docs/lessons.zh-CN.md"] {
        let text = read(&root().join(file));
        let row = text
            .lines()
            .find(|line| line.starts_with("| `work` |"))
            .unwrap_or_else(|| panic!("{file}: no `work` row in the WorkReport table"));
        for lesson in every_lesson() {
            if !row.contains(&format!("`{}`", lesson.name())) {
                missing.push(format!("{file}: the `work` row lacks `{}`", lesson.name()));
            }
        }
    }
    assert_none("work values missing", missing);
}

/// The quoted strings of `text` (`'…'` or `"…"`), in order.
fn quoted(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(['\'', '"']) {
        let quote = &rest[start..=start];
        let after = &rest[start + 1..];
        let Some(end) = after.find(quote) else { break };
        found.push(after[..end].to_owned());
        rest = &after[end + 1..];
    }
    found
}

/// The lesson registry (`routes::LESSONS`) is what the k6 scripts load and the dashboards
/// draw: the same routes and variants, and the stalling variants, and only they, in red.
#[test]
fn k6_and_dashboards_follow_the_lesson_registry() {
    use stallscope::routes::LESSONS;
    let mut problems = Vec::new();

    // load/lib.js: `name: {\n route: '…',\n variants: ['…', …],`
    let lib = read(&root().join("load/lib.js"));
    for lesson in LESSONS {
        let Some(at) = lib.find(&format!("  {}: {{", lesson.name)) else {
            problems.push(format!("load/lib.js: no lesson {}", lesson.name));
            continue;
        };
        let mut lines = lib[at..].lines().skip(1);
        let route = lines.next().map(quoted).unwrap_or_default();
        let variants = lines.next().map(quoted).unwrap_or_default();
        if route.first().map(String::as_str) != Some(lesson.routes[0]) {
            problems.push(format!("load/lib.js {}: route {route:?}", lesson.name));
        }
        let declared: Vec<&str> = lesson.variants.iter().map(|v| v.name).collect();
        if variants != declared {
            problems.push(format!(
                "load/lib.js {}: variants {variants:?}, declared {declared:?}",
                lesson.name
            ));
        }
    }

    // grafana/dashboards.py: every lesson route has its row; VARIANT_COLORS names every
    // variant, red exactly for the stalling ones.
    let dashboards = read(&root().join("grafana/dashboards.py"));
    let section = |start: &str| -> Vec<String> {
        let at = dashboards
            .find(start)
            .unwrap_or_else(|| panic!("grafana/dashboards.py: no {start}"));
        let body = &dashboards[at..];
        let end = body
            .find("\n]")
            .or_else(|| body.find("\n}"))
            .unwrap_or(body.len());
        quoted(&body[..end])
    };
    let drawn = section("LESSONS = [");
    for route in LESSONS.iter().flat_map(|l| l.routes) {
        if !drawn.iter().any(|quoted| quoted == route) {
            problems.push(format!("grafana/dashboards.py: no row for {route}"));
        }
    }
    let colours: HashMap<String, String> = section("VARIANT_COLORS = {")
        .chunks(2)
        .map(|pair| (pair[0].clone(), pair[1].clone()))
        .collect();
    for variant in LESSONS.iter().flat_map(|l| l.variants) {
        let colour = colours.get(variant.name).map(String::as_str);
        if colour.is_none() || (colour == Some("red")) != variant.stalls {
            problems.push(format!(
                "grafana/dashboards.py: {} is {colour:?}, but stalls: {}",
                variant.name, variant.stalls
            ));
        }
    }
    for name in colours.keys() {
        if !LESSONS
            .iter()
            .flat_map(|l| l.variants)
            .any(|v| v.name == name)
        {
            problems.push(format!(
                "grafana/dashboards.py: {name} is no declared variant"
            ));
        }
    }
    assert_none("lesson registry drift", problems);
}

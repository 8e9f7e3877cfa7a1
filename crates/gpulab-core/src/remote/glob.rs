//! Shell-style globs for copies: `*`, `?` and `[...]` in any component of a path, expanded against the
//! workspace's directories ([`RemoteExec::list_dir`]: an SFTP listing over SSH, the remote shell through the
//! API server) or this machine's.
//!
//! The rules are the shell's (POSIX `fnmatch` with `FNM_PATHNAME | FNM_PERIOD`): `*` matches any run of
//! characters and `?` any one character, neither matching `/` nor a leading `.`; `[abc]`, `[a-z]` and
//! `[!a-z]` (or `[^a-z]`) match one character of a set; `\` takes the next character literally. A `[`
//! without its `]` is an ordinary character. Matches come sorted by name, as the shell sorts them. There is
//! no `**` and no `{a,b}`; POSIX classes such as `[[:digit:]]` are not supported.
//!
//! ```
//! use gpulab_core::remote::glob::{Pattern, has_glob};
//!
//! assert!(Pattern::new("*.csv").matches("out.csv"));
//! assert!(!Pattern::new("*.csv").matches(".hidden.csv"));
//! assert!(Pattern::new("run-[0-9]?").matches("run-7b"));
//! assert!(has_glob("/workspace/out/*.csv") && !has_glob("/workspace/out/a\\*.csv"));
//! ```

use std::path::PathBuf;

use super::RemoteExec;
use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    /// `?`
    One,
    /// `*`
    Any,
    /// `[...]`: inclusive ranges (a single character is a range of one).
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// One path component's pattern, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    tokens: Vec<Token>,
}

/// The class starting after a `[` at `chars[start]`, and the index after its `]`; `None` when it has no `]`.
fn parse_class(chars: &[char], start: usize) -> Option<(Token, usize)> {
    let mut i = start;
    let negated = matches!(chars.get(i), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let mut c = *chars.get(i)?;
        if c == ']' && !first {
            return Some((Token::Class { negated, ranges }, i + 1));
        }
        first = false;
        if c == '\\' {
            i += 1;
            c = *chars.get(i)?;
        }
        i += 1;
        // `a-z`, unless the `-` is last (`[a-]` holds `a` and `-`).
        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&n| n != ']') {
            let mut end = chars[i + 1];
            i += 2;
            if end == '\\' {
                end = *chars.get(i)?;
                i += 1;
            }
            ranges.push((c, end));
        } else {
            ranges.push((c, c));
        }
    }
}

impl Pattern {
    /// Compile one component (no `/`) of a pattern.
    pub fn new(component: &str) -> Pattern {
        let chars: Vec<char> = component.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' => {
                    // `**` is `*` here.
                    if tokens.last() != Some(&Token::Any) {
                        tokens.push(Token::Any);
                    }
                    i += 1;
                }
                '?' => {
                    tokens.push(Token::One);
                    i += 1;
                }
                '[' => match parse_class(&chars, i + 1) {
                    Some((class, next)) => {
                        tokens.push(class);
                        i = next;
                    }
                    None => {
                        tokens.push(Token::Literal('['));
                        i += 1;
                    }
                },
                '\\' if i + 1 < chars.len() => {
                    tokens.push(Token::Literal(chars[i + 1]));
                    i += 2;
                }
                c => {
                    tokens.push(Token::Literal(c));
                    i += 1;
                }
            }
        }
        Pattern { tokens }
    }

    /// True when it matches only one name, the [`Pattern::literal`] one.
    pub fn is_literal(&self) -> bool {
        self.tokens.iter().all(|t| matches!(t, Token::Literal(_)))
    }

    /// The name it stands for with its escapes removed (`a\*b` → `a*b`); meaningful when
    /// [`Pattern::is_literal`].
    pub fn literal(&self) -> String {
        self.tokens
            .iter()
            .map(|t| match t {
                Token::Literal(c) => *c,
                Token::One => '?',
                Token::Any => '*',
                Token::Class { .. } => '[',
            })
            .collect()
    }

    /// Whether `name` (one path component) matches. A leading `.` must be matched by a literal `.`.
    pub fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.chars().collect();
        if name.first() == Some(&'.') && self.tokens.first() != Some(&Token::Literal('.')) {
            return false;
        }
        let one = |token: &Token, c: char| match token {
            Token::Literal(l) => *l == c,
            Token::One => c != '/',
            Token::Any => unreachable!("handled by the caller"),
            Token::Class { negated, ranges } => {
                c != '/' && ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
            }
        };
        // Iterative matching with backtracking to the last `*`: linear for one star, quadratic at worst.
        let (mut t, mut n) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while n < name.len() {
            match self.tokens.get(t) {
                Some(Token::Any) => {
                    star = Some((t, n));
                    t += 1;
                }
                Some(token) if one(token, name[n]) => {
                    t += 1;
                    n += 1;
                }
                _ => match star {
                    Some((star_t, star_n)) if name[star_n] != '/' => {
                        star = Some((star_t, star_n + 1));
                        t = star_t + 1;
                        n = star_n + 1;
                    }
                    _ => return false,
                },
            }
        }
        self.tokens[t..].iter().all(|t| *t == Token::Any)
    }
}

/// True when some component of `path` has a wildcard (`*`, `?` or a `[...]` set) that is not escaped.
pub fn has_glob(path: &str) -> bool {
    path.split('/').any(|c| !Pattern::new(c).is_literal())
}

/// Where [`walk`] lists directories.
enum Lister<'a> {
    Remote(&'a dyn RemoteExec),
    Local,
}

impl Lister<'_> {
    /// The names in the directory `dir` ("" is the working directory), or `None` when it is not one.
    async fn list(&self, dir: &str) -> Result<Option<Vec<String>>> {
        let dir = if dir.is_empty() { "." } else { dir };
        match self {
            Lister::Remote(remote) => remote.list_dir(dir).await,
            Lister::Local => {
                let entries = match std::fs::read_dir(dir) {
                    Ok(entries) => entries,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                        ) =>
                    {
                        return Ok(None);
                    }
                    Err(e) => return Err(Error::io(format!("list {dir}"), e)),
                };
                let mut names = Vec::new();
                for entry in entries {
                    let entry = entry.map_err(|e| Error::io(format!("list {dir}"), e))?;
                    // A name that is not UTF-8 cannot be matched against a UTF-8 pattern.
                    if let Ok(name) = entry.file_name().into_string() {
                        names.push(name);
                    }
                }
                Ok(Some(names))
            }
        }
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Every existing path matching `pattern`, sorted component by component. Components before the first
/// wildcard are taken as they are; from there on each is matched against a listing of its directory.
async fn walk(lister: &Lister<'_>, pattern: &str) -> Result<Vec<String>> {
    let absolute = pattern.starts_with('/');
    let components: Vec<Pattern> = pattern
        .split('/')
        .filter(|c| !c.is_empty())
        .map(Pattern::new)
        .collect();
    let first_glob = components
        .iter()
        .position(|c| !c.is_literal())
        .unwrap_or(components.len());
    let mut prefix = if absolute {
        "/".to_string()
    } else {
        String::new()
    };
    for component in &components[..first_glob] {
        prefix = join(&prefix, &component.literal());
    }
    let mut found = vec![prefix];
    for component in &components[first_glob..] {
        let mut next = Vec::new();
        for dir in &found {
            let Some(mut names) = lister.list(dir).await? else {
                continue;
            };
            names.sort();
            if component.is_literal() {
                let literal = component.literal();
                if names.contains(&literal) {
                    next.push(join(dir, &literal));
                }
            } else {
                next.extend(
                    names
                        .iter()
                        .filter(|n| component.matches(n))
                        .map(|n| join(dir, n)),
                );
            }
        }
        found = next;
    }
    // A trailing `/` matches directories only, as in the shell.
    if pattern.ends_with('/') && first_glob < components.len() {
        let mut dirs = Vec::new();
        for path in found {
            if lister.list(&path).await?.is_some() {
                dirs.push(path);
            }
        }
        found = dirs;
    }
    Ok(found)
}

/// Whether `path`, taken literally, exists: its parent directory lists its name.
async fn exists(lister: &Lister<'_>, path: &str) -> Result<bool> {
    let trimmed = path.trim_end_matches('/');
    let (dir, name) = match trimmed.rsplit_once('/') {
        Some(("", name)) => ("/", name),
        Some((dir, name)) => (dir, name),
        None => ("", trimmed),
    };
    if name.is_empty() {
        return Ok(false);
    }
    Ok(lister
        .list(dir)
        .await?
        .is_some_and(|names| names.iter().any(|n| n == name)))
}

/// The paths in the workspace that `pattern` names: itself when it has no wildcard (whether or not it
/// exists), else every match, sorted. A pattern that matches nothing, and is not itself an existing path
/// (a file may be called `data[1].csv`), is an error naming it.
pub async fn expand_remote(remote: &dyn RemoteExec, pattern: &str) -> Result<Vec<String>> {
    if !has_glob(pattern) {
        return Ok(vec![pattern.to_string()]);
    }
    let lister = Lister::Remote(remote);
    let found = walk(&lister, pattern).await?;
    if !found.is_empty() {
        return Ok(found);
    }
    if exists(&lister, pattern).await? {
        return Ok(vec![pattern.to_string()]);
    }
    Err(Error::Remote {
        message: format!("no file or directory in the workspace matches {pattern}"),
        hint: Some(format!(
            "check what is there with `gpulab ssh -- ls {}`",
            pattern
                .rsplit_once('/')
                .map_or(".", |(dir, _)| if dir.is_empty() { "/" } else { dir })
        )),
    })
}

/// The local paths that `pattern` names, by the same rules as [`expand_remote`]; for patterns the user
/// quoted, so that the shell left them to gpulab.
pub async fn expand_local(pattern: &str) -> Result<Vec<PathBuf>> {
    if !has_glob(pattern) {
        return Ok(vec![pattern.into()]);
    }
    let found = walk(&Lister::Local, pattern).await?;
    if !found.is_empty() {
        return Ok(found.into_iter().map(PathBuf::from).collect());
    }
    if std::fs::symlink_metadata(pattern).is_ok() {
        return Ok(vec![pattern.into()]);
    }
    Err(Error::io(
        format!("expand {pattern}"),
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no local file or directory matches it",
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, name: &str) -> bool {
        Pattern::new(pattern).matches(name)
    }

    #[test]
    fn stars_and_question_marks_match_within_a_name() {
        assert!(m("*", "a") && m("*", "") && m("*.csv", "out.csv") && !m("*.csv", ".csv.csv"));
        assert!(m("a*b*c", "aXXbYYc") && m("a*b*c", "abc") && !m("a*b*c", "acb"));
        assert!(m("*a*", "banana") && !m("*x*", "banana"));
        assert!(m("?", "x") && !m("?", "") && !m("?", "xy") && m("??.py", "ab.py"));
        assert!(m("a**b", "aXb"), "** is *");
        assert!(m("*.tar.gz", "x.tar.gz") && !m("*.tar.gz", "x.tar.gzz"));
        assert!(m("run*", "run") && m("run*", "run-1") && !m("run*", "ru"));
    }

    #[test]
    fn a_leading_dot_needs_a_literal_dot() {
        assert!(!m("*", ".bashrc") && !m("?bashrc", ".bashrc") && !m("[.]bashrc", ".bashrc"));
        assert!(m(".*", ".bashrc") && m(".b*", ".bashrc"));
        assert!(m("a*", "a.b"), "a dot inside a name is ordinary");
    }

    #[test]
    fn sets_ranges_negation_and_escapes() {
        assert!(m("[abc].py", "b.py") && !m("[abc].py", "d.py"));
        assert!(m("run-[0-9]", "run-7") && !m("run-[0-9]", "run-x"));
        assert!(m("[!0-9]*", "x1") && !m("[!0-9]*", "1x") && m("[^a]", "b"));
        assert!(m("[]]", "]") && m("[!]]", "a") && !m("[!]]", "]"));
        assert!(m("[a-]", "-") && m("[a-]", "a"));
        assert!(m("a\\*", "a*") && !m("a\\*", "ab"));
        assert!(m("[\\]]", "]"));
        assert!(m("a[", "a[") && m("a[b", "a[b"), "an unclosed [ is literal");
        assert!(m("é?", "éü"), "characters, not bytes");
    }

    #[test]
    fn globs_are_found_in_any_component_and_escapes_hide_them() {
        assert!(has_glob("/w/out/*.csv") && has_glob("/w/*/x") && has_glob("a[0-9]"));
        assert!(!has_glob("/w/out/a.csv") && !has_glob("a\\*") && !has_glob("a[") && !has_glob(""));
        assert!(Pattern::new("a\\*b").is_literal());
        assert_eq!(Pattern::new("a\\*b").literal(), "a*b");
    }

    #[tokio::test]
    async fn local_patterns_expand_sorted_and_report_no_match() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (path, body) in [
            ("out/b.csv", "b"),
            ("out/a.csv", "a"),
            ("out/.h.csv", "h"),
            ("out/c.txt", "c"),
            ("runs/r1/log.csv", "1"),
            ("runs/r2/log.csv", "2"),
            ("runs/r3/other", "3"),
            ("runs/file", "f"),
            ("lit/data[1].csv", "l"),
        ] {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, body).unwrap();
        }
        let r = root.display().to_string();
        let expand = |p: &str| {
            let p = format!("{r}/{p}");
            async move { expand_local(&p).await }
        };
        let rel = |paths: Vec<PathBuf>| -> Vec<String> {
            paths
                .iter()
                .map(|p| p.strip_prefix(root).unwrap().display().to_string())
                .collect()
        };
        assert_eq!(
            rel(expand("out/*.csv").await.unwrap()),
            ["out/a.csv", "out/b.csv"]
        );
        assert_eq!(rel(expand("out/.*").await.unwrap()), ["out/.h.csv"]);
        assert_eq!(
            rel(expand("runs/*/log.csv").await.unwrap()),
            ["runs/r1/log.csv", "runs/r2/log.csv"],
            "a glob in the middle, files and missing names skipped"
        );
        assert_eq!(
            rel(expand("runs/*/").await.unwrap()),
            ["runs/r1", "runs/r2", "runs/r3"],
            "a trailing / keeps directories only"
        );
        assert_eq!(
            rel(expand("run?/r[12]").await.unwrap()),
            ["runs/r1", "runs/r2"]
        );
        assert_eq!(
            rel(expand("lit/data[1].csv").await.unwrap()),
            ["lit/data[1].csv"],
            "no match, but the path exists as written"
        );
        assert_eq!(
            expand_local("not/a/glob.txt").await.unwrap(),
            [PathBuf::from("not/a/glob.txt")]
        );
        let err = expand("out/*.parquet").await.unwrap_err().to_string();
        assert!(
            err.contains("out/*.parquet") && err.contains("no local file"),
            "{err}"
        );
    }
}

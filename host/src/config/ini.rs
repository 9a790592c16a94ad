//! Keylime-compatible INI reading: Python `configparser.RawConfigParser()` with its defaults,
//! which is exactly what Keylime 7.14.3 `keylime/config.py` uses (no interpolation, `strict`,
//! `=`/`:` delimiters, full-line `#`/`;` comments only, lowercased keys, indented continuation
//! lines, `[DEFAULT]` fallbacks), plus the value forms of `config.get`/`getboolean`/`getlist`.
//! One `parse` call is one file: duplicates are errors within a file; `merge` applies a later
//! file (a `.conf.d` snippet) over an earlier one, as `RawConfigParser.read([...])` does.
//! Errors never echo line contents (they may hold passwords). std only, no panics.

use std::collections::HashSet;
use std::fmt;

/// Name of the section whose options are fallbacks for every other section.
pub const DEFAULT_SECTION: &str = "DEFAULT";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    /// Caller-chosen file index (see `parse_source`) and 1-based line of the `key = ...` line.
    pub source: usize,
    pub line: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ini {
    /// Named sections in first-seen order; names are case-sensitive and not trimmed.
    sections: Vec<(String, Vec<Entry>)>,
    defaults: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IniErrorKind {
    /// A non-comment, non-blank line before the first `[section]` (Python: MissingSectionHeaderError).
    MissingSectionHeader,
    /// Neither a section header nor `key = value`/`key: value` (Python: ParsingError).
    Syntax,
    DuplicateSection(String),
    DuplicateOption {
        section: String,
        key: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IniError {
    pub line: usize,
    pub kind: IniErrorKind,
}

impl fmt::Display for IniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = self.line;
        match &self.kind {
            IniErrorKind::MissingSectionHeader => {
                write!(f, "line {line}: option before any [section] header")
            }
            IniErrorKind::Syntax => write!(
                f,
                "line {line}: expected `[section]`, `key = value` or `key: value`"
            ),
            IniErrorKind::DuplicateSection(s) => {
                write!(f, "line {line}: section [{s}] appears twice in this file")
            }
            IniErrorKind::DuplicateOption { section, key } => {
                write!(
                    f,
                    "line {line}: option '{key}' appears twice in section [{section}] of this file"
                )
            }
        }
    }
}

impl std::error::Error for IniError {}

/// Python `str.isspace`, close enough: Unicode White_Space plus the separators U+001C..U+001F.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

fn set(entries: &mut Vec<Entry>, e: Entry) {
    match entries.iter_mut().find(|x| x.key == e.key) {
        Some(old) => *old = e, // keeps the first-seen position, like a Python dict
        None => entries.push(e),
    }
}

fn lookup<'a>(entries: &'a [Entry], key: &str) -> Option<&'a Entry> {
    entries.iter().find(|e| e.key == key)
}

/// Parses one file (source index 0).
pub fn parse(text: &str) -> Result<Ini, IniError> {
    parse_source(text, 0)
}

/// Parses one file, tagging its entries with `source` (e.g. an index into a list of paths).
pub fn parse_source(text: &str, source: usize) -> Result<Ini, IniError> {
    // Python reads files with universal newlines: \r\n, \r and \n all end a line.
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut ini = Ini::default();
    let mut cur: Option<Option<usize>> = None; // None: no header yet; Some(None): DEFAULT
    let mut cur_name = String::new();
    let mut opt: Option<usize> = None; // entry that indented lines continue
    let mut indent_level = 0usize;
    let mut seen_sections: HashSet<String> = HashSet::new();
    let mut seen_opts: HashSet<(String, String)> = HashSet::new();
    let mut syntax_err: Option<usize> = None; // Python reports these after the whole file
    for (idx, raw) in text.split('\n').enumerate() {
        let lineno = idx + 1;
        let value = py_strip(raw);
        if value.starts_with('#') || value.starts_with(';') {
            continue; // full-line comment, even inside a multi-line value
        }
        let entries = match cur {
            Some(Some(i)) => ini.sections.get_mut(i).map(|s| &mut s.1),
            Some(None) => Some(&mut ini.defaults),
            None => None,
        };
        let cont = entries.and_then(|es| opt.and_then(|o| es.get_mut(o)));
        if value.is_empty() {
            if let Some(e) = cont {
                e.value.push('\n'); // blank lines stay inside values; trailing ones are trimmed
            }
            continue;
        }
        let cur_indent = raw.chars().position(|c| !is_py_space(c)).unwrap_or(0);
        if let (Some(e), true) = (cont, cur_indent > indent_level) {
            e.value.push('\n');
            e.value.push_str(value);
            continue;
        }
        indent_level = cur_indent;
        // Section header: Python's `\[(?P<header>.+)\]` matched at the start (the last `]` wins,
        // anything after it is ignored).
        let header = value
            .strip_prefix('[')
            .and_then(|r| r.rfind(']').and_then(|j| r.get(..j)));
        if let Some(name) = header.filter(|n| !n.is_empty()) {
            opt = None;
            cur_name = name.to_string();
            if name == DEFAULT_SECTION {
                cur = Some(None); // may repeat within a file
            } else if seen_sections.contains(name) {
                return Err(IniError {
                    line: lineno,
                    kind: IniErrorKind::DuplicateSection(cur_name),
                });
            } else {
                seen_sections.insert(cur_name.clone());
                ini.sections.push((cur_name.clone(), Vec::new()));
                cur = Some(Some(ini.sections.len().saturating_sub(1)));
            }
            continue;
        }
        let entries = match cur {
            None => {
                return Err(IniError {
                    line: lineno,
                    kind: IniErrorKind::MissingSectionHeader,
                });
            }
            Some(Some(i)) => match ini.sections.get_mut(i) {
                Some(s) => &mut s.1,
                None => continue,
            },
            Some(None) => &mut ini.defaults,
        };
        // The first `=` or `:` splits key from value (`url = mysql://u:p@h` keeps its colons).
        let split = value
            .find(['=', ':'])
            .and_then(|i| Some((value.get(..i)?, value.get(i + 1..)?)));
        let Some((k, v)) = split else {
            syntax_err.get_or_insert(lineno);
            continue;
        };
        let key = k.trim_end_matches(is_py_space).to_lowercase();
        if key.is_empty() {
            syntax_err.get_or_insert(lineno);
            opt = None;
            continue;
        }
        let pair = (cur_name.clone(), key.clone());
        if seen_opts.contains(&pair) {
            return Err(IniError {
                line: lineno,
                kind: IniErrorKind::DuplicateOption {
                    section: pair.0,
                    key: pair.1,
                },
            });
        }
        seen_opts.insert(pair);
        set(
            entries,
            Entry {
                key: key.clone(),
                value: py_strip(v).to_string(),
                source,
                line: lineno,
            },
        );
        opt = entries.iter().position(|e| e.key == key);
    }
    if let Some(line) = syntax_err {
        return Err(IniError {
            line,
            kind: IniErrorKind::Syntax,
        });
    }
    let all = ini
        .sections
        .iter_mut()
        .flat_map(|s| s.1.iter_mut())
        .chain(ini.defaults.iter_mut());
    for e in all {
        let trimmed = e.value.trim_end_matches(is_py_space).len();
        e.value.truncate(trimmed);
    }
    Ok(ini)
}

impl Ini {
    /// Applies a later-read file over this one: options are replaced or added, sections added.
    pub fn merge(&mut self, later: Ini) {
        for e in later.defaults {
            set(&mut self.defaults, e);
        }
        for (name, entries) in later.sections {
            match self.sections.iter_mut().find(|(n, _)| *n == name) {
                Some((_, mine)) => entries.into_iter().for_each(|e| set(mine, e)),
                None => self.sections.push((name, entries)),
            }
        }
    }

    /// `RawConfigParser.get`: the section must exist (or be `DEFAULT`); the key is
    /// case-insensitive; `[DEFAULT]` supplies missing keys. The value is raw (quotes kept).
    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.entry(section, key).map(|e| e.value.as_str())
    }

    /// Like `get`, with where the value came from.
    pub fn entry(&self, section: &str, key: &str) -> Option<&Entry> {
        let key = key.to_lowercase();
        if section == DEFAULT_SECTION {
            return lookup(&self.defaults, &key);
        }
        let (_, entries) = self.sections.iter().find(|(n, _)| n == section)?;
        lookup(entries, &key).or_else(|| lookup(&self.defaults, &key))
    }

    pub fn sections(&self) -> impl Iterator<Item = &str> {
        self.sections.iter().map(|(n, _)| n.as_str())
    }

    /// The section's own entries (without DEFAULT fallbacks), e.g. to warn about unknown keys.
    pub fn entries(&self, section: &str) -> Option<&[Entry]> {
        self.sections
            .iter()
            .find(|(n, _)| n == section)
            .map(|(_, e)| e.as_slice())
    }
}

/// What `keylime.config.get` returns: any run of `"` and ` ` trimmed from both ends
/// (`str.strip('" ')`: not matched pairs, single quotes untouched).
pub fn strip_quotes(v: &str) -> &str {
    v.trim_matches(|c| c == '"' || c == ' ')
}

/// `RawConfigParser.getboolean` (file values: no quote stripping, `"True"` is an error).
/// Keylime's env overrides instead apply `strip_quotes` first and use the fallback if invalid.
pub fn parse_bool(v: &str) -> Option<bool> {
    const T: [&str; 4] = ["1", "yes", "true", "on"];
    const F: [&str; 4] = ["0", "no", "false", "off"];
    if T.iter().any(|t| t.eq_ignore_ascii_case(v)) {
        Some(true)
    } else if F.iter().any(|t| t.eq_ignore_ascii_case(v)) {
        Some(false)
    } else {
        None
    }
}

/// A Python literal as `ast.literal_eval` returns it (the subset Keylime configs use).
#[derive(Debug, Clone, PartialEq)]
pub enum PyLit {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    None,
    List(Vec<PyLit>),
    Dict(Vec<(PyLit, PyLit)>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListError(pub String);

impl fmt::Display for ListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ListError {}

/// `keylime.config.getlist`: `strip('" ')`, then `ast.literal_eval`, which must give a list;
/// string items are whitespace-stripped. `['agent']`, `["a", "b",]`, `[]`, `[{"k": "v"}]`.
/// An empty value is an error (Keylime: "Could not find option"); `a, b` is an error too.
pub fn parse_list(v: &str) -> Result<Vec<PyLit>, ListError> {
    let s = strip_quotes(v);
    if s.is_empty() {
        return Err(ListError(
            "empty value where a list like ['a', 'b'] is expected".into(),
        ));
    }
    let mut p = Lit {
        c: s.chars().collect(),
        i: 0,
        depth: 0,
    };
    let lit = p.value()?;
    p.ws();
    if p.i < p.c.len() {
        return p.err("unexpected text after the list");
    }
    match lit {
        PyLit::List(items) => Ok(items
            .into_iter()
            .map(|x| match x {
                PyLit::Str(s) => PyLit::Str(py_strip(&s).to_string()),
                other => other,
            })
            .collect()),
        _ => Err(ListError("value is not a list like ['a', 'b']".into())),
    }
}

/// `parse_list` where every item must be a string (`accept_tpm_hash_algs`, `severity_labels`...).
pub fn parse_str_list(v: &str) -> Result<Vec<String>, ListError> {
    parse_list(v)?
        .into_iter()
        .map(|x| match x {
            PyLit::Str(s) => Ok(s),
            _ => Err(ListError("list items must be quoted strings".into())),
        })
        .collect()
}

struct Lit {
    c: Vec<char>,
    i: usize,
    depth: usize,
}

impl Lit {
    fn peek(&self) -> Option<char> {
        self.c.get(self.i).copied()
    }
    fn err<T>(&self, what: &str) -> Result<T, ListError> {
        Err(ListError(format!("{what} at character {}", self.i + 1)))
    }
    /// Python token whitespace inside brackets, `\\`-newline, and `#` comments to end of line.
    fn ws(&mut self) {
        while let Some(c) = self.peek() {
            if c == '#' {
                while self.peek().is_some_and(|c| c != '\n') {
                    self.i += 1;
                }
            } else if matches!(c, ' ' | '\t' | '\n' | '\x0c') {
                self.i += 1;
            } else if c == '\\' && self.c.get(self.i + 1) == Some(&'\n') {
                self.i += 2; // explicit line joining
            } else {
                break;
            }
        }
    }
    fn value(&mut self) -> Result<PyLit, ListError> {
        self.ws();
        match self.peek() {
            Some('[') | Some('{') if self.depth >= 64 => self.err("nesting too deep"),
            Some('[') => self
                .seq(']')
                .map(|v| PyLit::List(v.into_iter().map(|(k, _)| k).collect())),
            Some('{') => self.seq('}').and_then(|v| {
                let pairs: Option<Vec<_>> = v.into_iter().map(|(k, val)| val.map(|x| (k, x))).collect();
                pairs
                    .map(PyLit::Dict)
                    .ok_or(ListError("set literals are not supported".into()))
            }),
            Some('(') if self.depth >= 64 => self.err("nesting too deep"),
            Some('(') => {
                self.i += 1;
                self.depth += 1;
                let v = self.value()?;
                self.ws();
                if self.peek() != Some(')') {
                    return self.err("tuples are not supported");
                }
                self.i += 1;
                self.depth -= 1;
                Ok(v)
            }
            Some('"') | Some('\'') => {
                let mut s = self.string()?;
                self.ws();
                while let Some('"' | '\'') = self.peek() {
                    s.push_str(&self.string()?); // "a" "b" concatenates
                    self.ws();
                }
                Ok(PyLit::Str(s))
            }
            Some(c) if c.is_ascii_digit() || matches!(c, '-' | '+' | '.') => self.number(),
            Some(c) if c.is_alphabetic() || c == '_' => {
                let start = self.i;
                while self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    self.i += 1;
                }
                let word: String = self.c.get(start..self.i).unwrap_or_default().iter().collect();
                match word.as_str() {
                    "True" => Ok(PyLit::Bool(true)),
                    "False" => Ok(PyLit::Bool(false)),
                    "None" => Ok(PyLit::None),
                    _ => {
                        self.i = start;
                        self.err("bare word (quote it)")
                    }
                }
            }
            _ => self.err("expected a value"),
        }
    }
    /// `[a, b,]` or `{k: v, ...}`; items are (value, Some(dict value)).
    fn seq(&mut self, close: char) -> Result<Vec<(PyLit, Option<PyLit>)>, ListError> {
        self.i += 1;
        self.depth += 1;
        let mut out = Vec::new();
        loop {
            self.ws();
            if self.peek() == Some(close) {
                self.i += 1;
                self.depth -= 1;
                return Ok(out);
            }
            let item = self.value()?;
            self.ws();
            let val = if close == '}' && self.peek() == Some(':') {
                self.i += 1;
                Some(self.value()?)
            } else {
                None
            };
            if close == '}' && val.is_none() && out.is_empty() {
                return self.err("set literals are not supported");
            }
            out.push((item, val));
            self.ws();
            match self.peek() {
                Some(',') => self.i += 1,
                Some(c) if c == close => {}
                _ => return self.err("expected ',' or closing bracket"),
            }
        }
    }
    /// Decimal int or float, with one optional sign (`- 1` is fine, as in Python).
    fn number(&mut self) -> Result<PyLit, ListError> {
        let neg = self.peek() == Some('-');
        if matches!(self.peek(), Some('+' | '-')) {
            self.i += 1;
            self.ws();
        }
        let start = self.i;
        while let Some(c) = self.peek() {
            let after_e = matches!(self.c.get(self.i.wrapping_sub(1)), Some('e' | 'E'));
            if !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_') || (after_e && matches!(c, '+' | '-'))) {
                break;
            }
            self.i += 1;
        }
        let body = self.c.get(start..self.i).unwrap_or_default();
        let digit = |k: usize| body.get(k).is_some_and(|c| c.is_ascii_digit());
        let underscores_ok =
            (0..body.len()).all(|k| body.get(k) != Some(&'_') || (digit(k.wrapping_sub(1)) && digit(k + 1)));
        let text: String = body.iter().filter(|c| **c != '_').collect();
        let first_ok = body.first().is_some_and(|c| c.is_ascii_digit() || *c == '.');
        let leading_zero =
            text.len() > 1 && text.starts_with('0') && text.chars().all(|c| c.is_ascii_digit());
        if !underscores_ok || !first_ok || (leading_zero && text.chars().any(|c| c != '0')) {
            return self.err("bad number");
        }
        if text.chars().all(|c| c.is_ascii_digit()) {
            return match format!("{}{text}", if neg { "-" } else { "" }).parse::<i64>() {
                Ok(n) => Ok(PyLit::Int(n)),
                Err(_) => self.err("integer out of range"),
            };
        }
        let finite = text
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'));
        match text.parse::<f64>() {
            Ok(x) if finite => Ok(PyLit::Float(if neg { -x } else { x })),
            _ => self.err("bad number"),
        }
    }
    /// A single- or double-quoted Python string with the usual backslash escapes.
    fn string(&mut self) -> Result<String, ListError> {
        let q = self.peek();
        if self
            .c
            .get(self.i + 1..self.i + 3)
            .is_some_and(|n| n.iter().all(|c| Some(*c) == q))
        {
            return self.err("triple-quoted strings are not supported");
        }
        self.i += 1;
        let mut out = String::new();
        loop {
            let c = self.peek();
            self.i += 1;
            match c {
                None | Some('\n') => return self.err("unterminated string"),
                Some(c) if Some(c) == q => return Ok(out),
                Some('\\') => {
                    let e = self.peek();
                    self.i += 1;
                    let hex = |n: usize, me: &mut Self| -> Result<char, ListError> {
                        let h: String = me.c.get(me.i..me.i + n).unwrap_or_default().iter().collect();
                        me.i += n;
                        match u32::from_str_radix(&h, 16)
                            .ok()
                            .filter(|_| h.len() == n)
                            .and_then(char::from_u32)
                        {
                            Some(ch) => Ok(ch),
                            None => me.err("bad \\x, \\u or \\U escape"),
                        }
                    };
                    match e {
                        Some('\n') => {}
                        Some('n') => out.push('\n'),
                        Some('t') => out.push('\t'),
                        Some('r') => out.push('\r'),
                        Some('a') => out.push('\x07'),
                        Some('b') => out.push('\x08'),
                        Some('f') => out.push('\x0c'),
                        Some('v') => out.push('\x0b'),
                        Some(c @ ('\\' | '\'' | '"')) => out.push(c),
                        Some('x') => out.push(hex(2, self)?),
                        Some('u') => out.push(hex(4, self)?),
                        Some('U') => out.push(hex(8, self)?),
                        Some(c @ '0'..='7') => {
                            let mut n = c.to_digit(8).unwrap_or(0);
                            for _ in 0..2 {
                                match self.peek().and_then(|d| d.to_digit(8)) {
                                    Some(d) => {
                                        n = n * 8 + d;
                                        self.i += 1;
                                    }
                                    None => break,
                                }
                            }
                            out.push(char::from_u32(n).unwrap_or('\u{fffd}'));
                        }
                        Some('N') => return self.err("\\N{...} escapes are not supported"),
                        Some(c) => {
                            out.push('\\'); // unknown escapes stay literal, e.g. "\d+" in a regex
                            out.push(c);
                        }
                        None => return self.err("unterminated string"),
                    }
                }
                Some(c) => out.push(c),
            }
        }
    }
}

/// Every option of `text` as (section, key, value, line), `[DEFAULT]` options included under
/// each section that does not set them itself.
pub fn entries(text: &str) -> Result<Vec<(String, String, String, usize)>, IniError> {
    let ini = parse(text)?;
    let mut out = Vec::new();
    let sections: Vec<String> = ini.sections().map(str::to_owned).collect();
    for section in &sections {
        for e in ini.entries(section).unwrap_or_default() {
            out.push((section.clone(), e.key.clone(), e.value.clone(), e.line));
        }
        for d in &ini.defaults {
            if ini
                .entries(section)
                .unwrap_or_default()
                .iter()
                .all(|e| e.key != d.key)
            {
                out.push((section.clone(), d.key.clone(), d.value.clone(), d.line));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> IniError {
        match parse(text) {
            Err(e) => e,
            Ok(ini) => panic!("expected an error, got {ini:?}"),
        }
    }

    #[test]
    fn basics_match_python() {
        let ini =
            parse("# c\n; c\n[verifier]\nIP = \"127.0.0.1\"\nport: 8881\nempty =\nk = v # kept\n").unwrap();
        assert_eq!(ini.get("verifier", "ip"), Some("\"127.0.0.1\""));
        assert_eq!(ini.get("verifier", "IP"), Some("\"127.0.0.1\""));
        assert_eq!(ini.get("verifier", "port"), Some("8881"));
        assert_eq!(ini.get("verifier", "empty"), Some(""));
        assert_eq!(ini.get("verifier", "k"), Some("v # kept"));
        assert_eq!(ini.get("Verifier", "port"), None); // section names are case-sensitive
        assert_eq!(ini.entry("verifier", "port").map(|e| e.line), Some(5));
        let ini = parse("[s]\nurl = mysql://a:b@h/x\na:b = c\nk ==x\nmy key = 100%\n").unwrap();
        assert_eq!(ini.get("s", "url"), Some("mysql://a:b@h/x"));
        assert_eq!(ini.get("s", "a"), Some("b = c"));
        assert_eq!(ini.get("s", "k"), Some("=x"));
        assert_eq!(ini.get("s", "my key"), Some("100%"));
    }

    #[test]
    fn continuation_lines() {
        let ini = parse("[s]\nk = a\n  b\n\n  c\n# comment\n  d\n\nj = 1\n").unwrap();
        assert_eq!(ini.get("s", "k"), Some("a\nb\n\nc\nd"));
        assert_eq!(ini.get("s", "j"), Some("1"));
        let ini = parse("[s]\n\tk = a\n\t  b\n  c\n   # indented comment\n").unwrap();
        assert_eq!(ini.get("s", "k"), Some("a\nb\nc"));
        let ini = parse("[s]\r\nk = a\r\n  [t]\r\n\r\n  j = b\rz=1").unwrap();
        assert_eq!(ini.get("s", "k"), Some("a\n[t]\n\nj = b"));
        assert_eq!(ini.get("s", "z"), Some("1"));
        let ini = parse("  [s]\n  k = v\n  j = w\n").unwrap();
        assert_eq!((ini.get("s", "k"), ini.get("s", "j")), (Some("v"), Some("w")));
    }

    #[test]
    fn headers_and_default() {
        let ini = parse("[s] trailing\nk=v\n[ t ]\nz=1\n[a]b]\nq=2\n").unwrap();
        assert_eq!(ini.sections().collect::<Vec<_>>(), ["s", " t ", "a]b"]);
        let ini = parse("[DEFAULT]\nx = d\n[s]\ny = 1\n[DEFAULT]\nz = 2\n").unwrap();
        assert_eq!((ini.get("s", "x"), ini.get("s", "z")), (Some("d"), Some("2")));
        assert_eq!(ini.get("DEFAULT", "x"), Some("d"));
        assert_eq!(ini.get("nosuch", "x"), None);
        assert_eq!(ini.entries("s").map(|e| e.len()), Some(1));
    }

    #[test]
    fn errors_match_python() {
        assert_eq!(err("k = v\n").kind, IniErrorKind::MissingSectionHeader);
        assert_eq!(err("[]\nk=v\n").kind, IniErrorKind::MissingSectionHeader);
        assert_eq!(err("\u{feff}[s]\n").kind, IniErrorKind::MissingSectionHeader);
        assert_eq!(err("[s]\njustword\n").line, 2);
        assert_eq!(err("[s]\n = v\n").kind, IniErrorKind::Syntax);
        assert_eq!(err("[s]\n[]\n").kind, IniErrorKind::Syntax);
        let e = err("[s]\nk = 1\nK = 2\n");
        assert_eq!(
            e.to_string(),
            "line 3: option 'k' appears twice in section [s] of this file"
        );
        assert_eq!(
            err("[s]\na=1\n[t]\n[s]\n").kind,
            IniErrorKind::DuplicateSection("s".into())
        );
        // duplicates are raised at once, syntax errors after the whole file (as Python does)
        assert_eq!(err("[s]\nbad\nk=1\nk=2\n").line, 4);
    }

    #[test]
    fn merge_overrides_like_snippets() {
        let mut base = parse("[verifier]\nip = 1\nport = 2\n").unwrap();
        base.merge(parse_source("[verifier]\nport = 3\nnew = 4\n[revocations]\nzmq_port = 5\n", 1).unwrap());
        assert_eq!(base.get("verifier", "ip"), Some("1"));
        assert_eq!(
            base.entry("verifier", "port").map(|e| (e.source, e.line)),
            Some((1, 2))
        );
        assert_eq!(base.get("verifier", "new"), Some("4"));
        assert_eq!(base.get("revocations", "zmq_port"), Some("5"));
    }

    #[test]
    fn value_helpers() {
        assert_eq!(strip_quotes("\"127.0.0.1\""), "127.0.0.1");
        assert_eq!(strip_quotes(" \"a\"b\" "), "a\"b");
        assert_eq!(strip_quotes("'x'"), "'x'");
        for (v, b) in [
            ("1", true),
            ("YES", true),
            ("True", true),
            ("on", true),
            ("0", false),
            ("No", false),
            ("FALSE", false),
            ("off", false),
        ] {
            assert_eq!(parse_bool(v), Some(b), "{v}");
        }
        for v in ["", "\"True\"", " true", "y", "2", "enabled"] {
            assert_eq!(parse_bool(v), None, "{v:?}");
        }
    }

    #[test]
    fn lists() {
        let s = |v: &str| parse_str_list(v);
        assert_eq!(s("['agent']").unwrap(), ["agent"]);
        assert_eq!(
            s("[\"sha512\", 'sha384' , \" sha256 \",]").unwrap(),
            ["sha512", "sha384", "sha256"]
        );
        assert_eq!(s("\"['a']\"").unwrap(), ["a"]);
        assert_eq!(s("[]").unwrap(), Vec::<String>::new());
        assert_eq!(
            s("['a' 'b', # c\n 'x\\ty\\'\\d\\x41\\u00e9\\101']").unwrap(),
            ["ab", "x\ty'\\dAéA"]
        );
        let policy = parse_list("[{\"event_id\": \".*\", \"severity_label\" : \"emergency\"}]").unwrap();
        let pair = |k: &str, v: &str| (PyLit::Str(k.into()), PyLit::Str(v.into()));
        assert_eq!(
            policy,
            [PyLit::Dict(vec![
                pair("event_id", ".*"),
                pair("severity_label", "emergency")
            ])]
        );
        assert_eq!(
            parse_list("[1, -2, 1_000, 2.5, 1e3, True, None, [], {}]").unwrap(),
            [
                PyLit::Int(1),
                PyLit::Int(-2),
                PyLit::Int(1000),
                PyLit::Float(2.5),
                PyLit::Float(1000.0),
                PyLit::Bool(true),
                PyLit::None,
                PyLit::List(vec![]),
                PyLit::Dict(vec![])
            ]
        );
        for bad in [
            "",
            "\"\"",
            "a, b",
            "'a'",
            "('a',)",
            "[a]",
            "['a'",
            "['a',,]",
            "[{'a'}]",
            "['a'] x",
            "[01]",
            "[1_]",
            "[1__0]",
            "[0x1]",
            "['''a''']",
            "['\\N{DASH}']",
            "[('a', 'b')]",
            "[inf]",
            "['\\x4']",
            "['a\n']",
            "[1 2]",
            "[{'k' 'v'}]",
            "[-]",
            "[.]",
            "[1e]",
        ] {
            assert!(parse_list(bad).is_err(), "{bad:?}");
        }
        assert!(s("[1]").is_err());
        assert_eq!(
            parse_list("[00, - 1, (' x '), 1.e3]").unwrap(),
            [
                PyLit::Int(0),
                PyLit::Int(-1),
                PyLit::Str("x".into()),
                PyLit::Float(1000.0)
            ]
        );
    }

    #[test]
    fn no_panics_on_junk() {
        let deep = "[".repeat(10_000);
        assert!(parse_list(&deep).is_err());
        let mut seed = 0x2545_f491u32;
        let alphabet: Vec<char> = "[]{}=:#; \t\n\r\"'\\,xK0.-eu\u{1c}é".chars().collect();
        for _ in 0..3000 {
            let len = (seed % 40) as usize;
            let mut s = String::new();
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                s.push(*alphabet.get(seed as usize % alphabet.len()).unwrap_or(&'x'));
            }
            let _ = parse(&s).map(|i| i.get("x", "x").map(str::len));
            let _ = parse_list(&s);
            let _ = parse_list(&format!("[{s}]"));
        }
    }
}

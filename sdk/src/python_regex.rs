//! Python `re` patterns, as Keylime policies carry them (runtime-policy `excludes`,
//! measured-boot `kernel_cmdline`), rewritten for the Rust `regex` crate, or refused with
//! the reason when they use what that engine lacks (look-around, back-references, …).
//! The rewrite is pure text: policies compile the result with the engine they ship.

/// Rewrites a Python `re` pattern into the `regex` crate's syntax, or says why it cannot.
pub fn translate(python: &str) -> Result<String, String> {
    let chars: Vec<char> = python.chars().collect();
    let mut out = String::with_capacity(python.len() + 8);
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        match c {
            '\\' => i = escape(&chars, i, &mut out, false)?,
            '[' => i = class(&chars, i, &mut out)?,
            '(' if chars.get(i + 1) == Some(&'?') => i = group(&chars, i, &mut out)?,
            '{' => match quantifier(&chars, i) {
                Some((text, next)) => {
                    out.push_str(&text);
                    i = next;
                }
                None => {
                    out.push_str("\\{");
                    i += 1;
                }
            },
            '}' => {
                out.push_str("\\}");
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// `\x` at `i`; returns the index after it.
fn escape(chars: &[char], i: usize, out: &mut String, in_class: bool) -> Result<usize, String> {
    let Some(&next) = chars.get(i + 1) else {
        return Err("pattern ends with a lone backslash".into());
    };
    match next {
        '1'..='9' if !in_class => Err("back-references are not supported".into()),
        '0'..='7' => {
            // Octal escape: up to three digits.
            let mut end = i + 1;
            let mut value = 0u32;
            while end < i + 4
                && let Some(digit) = chars.get(end).and_then(|c| c.to_digit(8))
            {
                value = value * 8 + digit;
                end += 1;
            }
            out.push_str(&format!("\\x{{{value:x}}}"));
            Ok(end)
        }
        'Z' if !in_class => {
            out.push_str("\\z");
            Ok(i + 2)
        }
        'N' => Err("named Unicode escapes (\\N{...}) are not supported".into()),
        'u' | 'U' | 'x' => {
            out.push('\\');
            out.push(next);
            Ok(i + 2)
        }
        // Python reads `\<` and `\>` as the characters; Rust as word boundaries.
        '<' | '>' => {
            out.push(next);
            Ok(i + 2)
        }
        'A' | 'b' | 'B' | 'd' | 'D' | 's' | 'S' | 'w' | 'W' | 'a' | 'f' | 'n' | 'r' | 't' | 'v' => {
            out.push('\\');
            out.push(next);
            Ok(i + 2)
        }
        c if c.is_ascii_alphanumeric() => Err(format!("unknown escape \\{c}")),
        c if c.is_ascii() => {
            out.push('\\');
            out.push(c);
            Ok(i + 2)
        }
        c => {
            // A non-ASCII character escaped is the character itself in Python.
            out.push(c);
            Ok(i + 2)
        }
    }
}

/// A character class starting at `i`. Python takes `[` inside a class literally and knows
/// no set operators; Rust nests classes and reads `&&`, `--`, `~~`, so those are escaped.
fn class(chars: &[char], i: usize, out: &mut String) -> Result<usize, String> {
    let mut j = i + 1;
    out.push('[');
    if chars.get(j) == Some(&'^') {
        out.push('^');
        j += 1;
    }
    if chars.get(j) == Some(&']') {
        out.push_str("\\]");
        j += 1;
    }
    let mut previous: Option<char> = None;
    while let Some(&c) = chars.get(j) {
        match c {
            ']' => {
                out.push(']');
                return Ok(j + 1);
            }
            '\\' => {
                j = escape(chars, j, out, true)?;
                previous = None;
                continue;
            }
            '[' => out.push_str("\\["),
            '&' | '~' if previous == Some(c) => {
                out.push('\\');
                out.push(c);
            }
            '-' if previous == Some('-') => out.push_str("\\-"),
            _ => out.push(c),
        }
        previous = Some(c);
        j += 1;
    }
    Err("unterminated character set".into())
}

/// A `(?…` construct at `i`.
fn group(chars: &[char], i: usize, out: &mut String) -> Result<usize, String> {
    let rest: String = chars.iter().skip(i).take(4).collect();
    if rest.starts_with("(?=")
        || rest.starts_with("(?!")
        || rest.starts_with("(?<=")
        || rest.starts_with("(?<!")
    {
        return Err("look-ahead and look-behind are not supported".into());
    }
    if rest.starts_with("(?P=") {
        return Err("back-references are not supported".into());
    }
    if rest.starts_with("(?>") {
        return Err("atomic groups are not supported".into());
    }
    if rest.starts_with("(?(") {
        return Err("conditional groups are not supported".into());
    }
    if rest.starts_with("(?#") {
        // A comment: dropped.
        let mut j = i + 3;
        while chars.get(j).is_some_and(|c| *c != ')') {
            j += 1;
        }
        return Ok(j + 1);
    }
    if rest.starts_with("(?:") || rest.starts_with("(?P<") || rest.starts_with("(?<") {
        out.push_str("(?");
        return Ok(i + 2);
    }
    // Inline flags: (?aiLmsux) or (?imsx-imsx:...)
    let mut j = i + 2;
    out.push_str("(?");
    while let Some(&flag) = chars.get(j) {
        match flag {
            'i' | 'm' | 's' | 'x' | '-' => out.push(flag),
            // Unicode matching is Python 3's default for str patterns.
            'u' => {}
            'a' | 'L' => return Err(format!("the inline flag '{flag}' is not supported")),
            ':' | ')' => {
                if out.ends_with("(?") && flag == ')' {
                    // `(?u)` and the like: nothing left to say.
                    out.truncate(out.len() - 2);
                    return Ok(j + 1);
                }
                out.push(flag);
                return Ok(j + 1);
            }
            c => return Err(format!("unknown group construct '(?{c}'")),
        }
        j += 1;
    }
    Err("unterminated group".into())
}

/// A repetition `{m}`, `{m,}`, `{,n}`, `{m,n}` at `i`, rewritten for Rust; `None` when the
/// brace is a literal (Python's reading of anything else).
fn quantifier(chars: &[char], i: usize) -> Option<(String, usize)> {
    let mut j = i + 1;
    let mut min = String::new();
    while let Some(&digit) = chars.get(j).filter(|c| c.is_ascii_digit()) {
        min.push(digit);
        j += 1;
    }
    let mut max = None;
    if chars.get(j) == Some(&',') {
        j += 1;
        let mut m = String::new();
        while let Some(&digit) = chars.get(j).filter(|c| c.is_ascii_digit()) {
            m.push(digit);
            j += 1;
        }
        max = Some(m);
    }
    if chars.get(j) != Some(&'}') {
        return None;
    }
    let text = match max {
        None if min.is_empty() => return None,
        None => format!("{{{min}}}"),
        Some(max) => {
            let min = if min.is_empty() { "0".to_owned() } else { min };
            format!("{{{min},{max}}}")
        }
    };
    Some((text, j + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_only_syntax_is_rewritten() {
        assert_eq!(translate(r"a{,3}").unwrap(), "a{0,3}");
        assert_eq!(translate(r"a{2,}b{3}").unwrap(), "a{2,}b{3}");
        assert_eq!(translate(r"/x{y}").unwrap(), r"/x\{y\}");
        assert_eq!(translate(r"[[a]").unwrap(), r"[\[a]");
        assert_eq!(translate(r"[]a]").unwrap(), r"[\]a]");
        assert_eq!(translate(r"[a&&b]").unwrap(), r"[a&\&b]");
        assert_eq!(translate(r"end\Z").unwrap(), r"end\z");
        assert_eq!(translate(r"\<tag\>").unwrap(), "<tag>");
        assert_eq!(translate(r"(?P<n>x)(?#note)").unwrap(), "(?P<n>x)");
        assert_eq!(translate(r"(?u)x").unwrap(), "x");
        assert_eq!(translate(r"(?i)x").unwrap(), "(?i)x");
        assert_eq!(translate(r"\0").unwrap(), r"\x{0}");
        // re.escape output of a kernel command line.
        assert_eq!(
            translate(r"root=/dev/mapper/rhel\-root\ ro\ rd\.lvm").unwrap(),
            r"root=/dev/mapper/rhel\-root\ ro\ rd\.lvm"
        );
    }

    #[test]
    fn what_the_rust_engine_lacks_is_refused_with_the_reason() {
        assert!(translate(r"(?=x)").unwrap_err().contains("look-ahead"));
        assert!(translate(r"(?<!x)y").unwrap_err().contains("look-behind"));
        assert!(translate(r"(a)\1").unwrap_err().contains("back-references"));
        assert!(
            translate(r"(?P<a>x)(?P=a)")
                .unwrap_err()
                .contains("back-references")
        );
        assert!(translate(r"(?>x)").unwrap_err().contains("atomic"));
        assert!(translate(r"x\").unwrap_err().contains("backslash"));
        assert!(translate(r"[abc").unwrap_err().contains("unterminated"));
        assert!(translate(r"\q").unwrap_err().contains("unknown escape"));
    }
}

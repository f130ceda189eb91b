//! Scenario files: TOML parsed with spans, so that every error names file, line and
//! column; numbers with size suffixes; references to earlier steps' results.

use std::fmt;
use std::ops::Range;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// A parsed value with where it came from.
#[derive(Clone, Debug)]
pub struct Node {
    /// The value.
    pub val: Val,
    /// Byte range in the file.
    pub span: Range<usize>,
}

/// A TOML value, as far as scenarios use them.
#[derive(Clone, Debug)]
pub enum Val {
    /// A string.
    Str(String),
    /// An integer.
    Int(i128),
    /// A boolean.
    Bool(bool),
    /// An array.
    Arr(Vec<Node>),
    /// A table, keys in file order.
    Table(Vec<(String, Node)>),
    /// Something scenarios never use (floats, dates).
    Other(&'static str),
}

impl Val {
    /// What kind of value it is, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Val::Str(_) => "a string",
            Val::Int(_) => "an integer",
            Val::Bool(_) => "a boolean",
            Val::Arr(_) => "an array",
            Val::Table(_) => "a table",
            Val::Other(k) => k,
        }
    }
}

fn convert(v: &Spanned<DeValue<'_>>) -> Node {
    let span = v.span();
    let val = match v.get_ref() {
        DeValue::String(s) => Val::Str(s.to_string()),
        DeValue::Integer(i) => {
            let digits = i.as_str().replace('_', "");
            let (neg, digits) = match digits.strip_prefix('-') {
                Some(d) => (true, d.to_string()),
                None => (false, digits.trim_start_matches('+').to_string()),
            };
            match i128::from_str_radix(&digits, i.radix()) {
                Ok(n) => Val::Int(if neg { -n } else { n }),
                Err(_) => Val::Other("an integer out of range"),
            }
        }
        DeValue::Float(_) => Val::Other("a float"),
        DeValue::Boolean(b) => Val::Bool(*b),
        DeValue::Datetime(_) => Val::Other("a date"),
        DeValue::Array(a) => Val::Arr(a.iter().map(convert).collect()),
        DeValue::Table(t) => Val::Table(table(t)),
    };
    Node { val, span }
}

fn table(t: &DeTable<'_>) -> Vec<(String, Node)> {
    let mut v: Vec<(String, Node)> = t
        .iter()
        .map(|(k, v)| (k.get_ref().to_string(), convert(v)))
        .collect();
    v.sort_by_key(|(_, n)| n.span.start);
    v
}

/// A file's text and name, for line/column messages.
#[derive(Clone, Debug)]
pub struct Source {
    /// File name as given.
    pub name: String,
    /// Its text.
    pub text: String,
}

/// An error in a scenario file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FileError {
    /// File name.
    pub file: String,
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub col: usize,
    /// What was wrong and what was expected.
    pub msg: String,
    /// The line it is on, for [`FileError::render`] (not in JSON, which has line and
    /// column).
    #[serde(skip)]
    pub source_line: Option<ErrorLine>,
}

/// The source line of an error and the part of it to point at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorLine {
    /// The line (its first [`SNIPPET_BYTES`]).
    pub text: String,
    /// What to underline, as byte offsets into `text`.
    pub span: Range<usize>,
}

/// Most bytes of a line an error shows (a long line is cut around the error).
pub const SNIPPET_BYTES: usize = 240;

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.col, self.msg)
    }
}

impl FileError {
    /// The error as rustc shows one, by annotate-snippets: the message, the file, line
    /// and column, and the offending line with a caret under what is wrong.
    pub fn render(&self) -> String {
        use annotate_snippets::{AnnotationKind, Level, Renderer, Snippet};
        let Some(l) = &self.source_line else {
            return format!("error: {self}");
        };
        // annotate-snippets adds the line and column to the path itself.
        let path = self.file.as_str();
        let report = &[Level::ERROR.primary_title(self.msg.as_str()).element(
            Snippet::source(l.text.as_str())
                .line_start(self.line)
                .path(path)
                .annotation(AnnotationKind::Primary.span(l.span.clone())),
        )];
        Renderer::plain().render(report).to_string()
    }
}

/// Where each line of a text starts: line numbers of many offsets in O(log n) each (a
/// file of 10^6 steps numbers its steps in linear time).
pub struct LineIndex(Vec<usize>);

impl LineIndex {
    /// Indexes `text`.
    pub fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self(starts)
    }
    /// The line (from 1) holding byte offset `at`.
    pub fn line(&self, at: usize) -> usize {
        self.0.partition_point(|&s| s <= at)
    }
}

impl Source {
    /// Line and column of a byte offset.
    pub fn line_col(&self, at: usize) -> (usize, usize) {
        let at = at.min(self.text.len());
        let before = &self.text[..at];
        let line = before.matches('\n').count() + 1;
        let col = before.rfind('\n').map_or(at, |i| at - i - 1) + 1;
        (line, col)
    }
    /// An error at `span`.
    pub fn err(&self, span: &Range<usize>, msg: impl Into<String>) -> FileError {
        let (line, col) = self.line_col(span.start);
        FileError {
            file: self.name.clone(),
            line,
            col,
            msg: msg.into(),
            source_line: self.error_line(span),
        }
    }

    /// The line holding `span.start`, cut after [`SNIPPET_BYTES`], with the part of the
    /// span on that line.
    fn error_line(&self, span: &Range<usize>) -> Option<ErrorLine> {
        let t = &self.text;
        let at = span.start.min(t.len());
        let start = t[..at].rfind('\n').map_or(0, |i| i + 1);
        let end = t[at..].find('\n').map_or(t.len(), |i| at + i);
        // The line from its start (so that the column shown is the line's own), cut after
        // SNIPPET_BYTES; an error past that shows no snippet, only line and column.
        if at - start > SNIPPET_BYTES {
            return None;
        }
        let lo = start;
        let mut hi = (lo + SNIPPET_BYTES).min(end);
        while !t.is_char_boundary(hi) {
            hi -= 1;
        }
        let text = t.get(lo..hi)?.trim_end_matches('\r').to_string();
        let s = (at - lo).min(text.len());
        let e = (span.end.clamp(at, hi) - lo).min(text.len());
        // At least the character at the error, when there is one.
        let e = if e > s && text.is_char_boundary(e) {
            e
        } else {
            text[s..].chars().next().map_or(s, |c| s + c.len_utf8())
        };
        Some(ErrorLine { text, span: s..e })
    }
    /// The whole document as a table.
    pub fn parse(&self) -> Result<Vec<(String, Node)>, FileError> {
        match DeTable::parse(&self.text) {
            Ok(t) => Ok(table(t.get_ref())),
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                Err(self.err(&span, format!("not valid TOML: {}", e.message().trim())))
            }
        }
    }
}

/// A number as scenarios write them: an integer, or a string holding decimal or `0x` hex,
/// with `_` separators and an optional K, M, G or T (binary) suffix.
pub fn parse_num(s: &str) -> Result<u64, String> {
    let t = s.trim().replace('_', "");
    let (body, mult) = match t.chars().last() {
        Some('K') | Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        Some('T') => (&t[..t.len() - 1], 1 << 40),
        _ => (&t[..], 1),
    };
    let n = if let Some(h) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        u64::from_str_radix(h, 16)
    } else {
        body.parse::<u64>()
    }
    .map_err(|_| format!("{s:?} is not a number (use 4096, 0x1000 or 4K)"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} does not fit in 64 bits"))
}

/// Longest word a suggestion is looked for: the edit distance (strsim's Levenshtein) costs
/// the product of the lengths, and no valid name is near this long.
const MAX_SUGGEST_LEN: usize = 64;

/// The closest of `candidates` to `word`, if close enough to be a likely typo (a distance
/// of at most half the candidate's length, at least 2). Bounded: a word longer than
/// `MAX_SUGGEST_LEN` gets no suggestion.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    if word.len() > MAX_SUGGEST_LEN {
        return None;
    }
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(word, c), c))
        .min_by_key(|(d, _)| *d)
        .filter(|(d, c)| *d <= (c.len() / 2).max(2))
        .map(|(_, c)| c)
}

/// A name from the file as an error message echoes it: at most 80 characters, the rest
/// elided (a 10 MB operation name is not printed back).
pub fn echo(s: &str) -> String {
    const MAX: usize = 80;
    match s.char_indices().nth(MAX) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes)", &s[..cut], s.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_take_hex_suffixes_and_separators() {
        assert_eq!(parse_num("4096"), Ok(4096));
        assert_eq!(parse_num("0x1000"), Ok(4096));
        assert_eq!(parse_num("4K"), Ok(4096));
        assert_eq!(parse_num("1_024"), Ok(1024));
        assert_eq!(parse_num("0x8_0000_0000"), Ok(1 << 35));
        assert_eq!(parse_num("2G"), Ok(2 << 30));
        assert!(parse_num("x12").is_err());
        assert!(parse_num("99999999999T").is_err());
    }

    #[test]
    fn typos_find_the_closest_name() {
        assert_eq!(
            closest("h_put_tec", ["h_put_tce", "h_get_tce"]),
            Some("h_put_tce")
        );
        assert_eq!(closest("zzzzzzzz", ["h_put_tce"]), None);
    }

    #[test]
    fn errors_name_line_and_column() {
        let s = Source {
            name: "f.toml".into(),
            text: "a = 1\nb = [\n".into(),
        };
        let e = s.parse().unwrap_err();
        assert_eq!(e.file, "f.toml");
        assert!(e.line >= 2, "{e}");
        let s = Source {
            name: "g".into(),
            text: "x = 1\n  y = 'z'\n".into(),
        };
        let t = s.parse().unwrap();
        assert_eq!(s.line_col(t[1].1.span.start), (2, 7));
    }
}

#[cfg(test)]
mod render_tests {
    use super::*;

    fn src(text: &str) -> Source {
        Source {
            name: "f.toml".into(),
            text: text.into(),
        }
    }

    #[test]
    fn an_error_shows_its_line_with_a_caret_under_the_span() {
        let s = src("a = 1\nop = \"vfio_open_grup\"\n");
        let e = s.err(&(11..27), "unknown operation");
        let shown = e.render();
        assert!(shown.contains("error: unknown operation"), "{shown}");
        assert!(shown.contains("--> f.toml:2:6"), "{shown}");
        assert!(shown.contains("2 | op = \"vfio_open_grup\""), "{shown}");
        assert!(shown.contains("^^^^^^^^^^^^^^^^"), "{shown}");
        assert_eq!(e.to_string(), "f.toml:2:6: unknown operation");
    }

    #[test]
    fn multibyte_text_long_lines_and_line_ends_are_handled() {
        let s = src("naïve = \"é\"\r\nx = 1");
        let e = s.err(&(9..13), "bad");
        let l = e.source_line.clone().unwrap();
        assert_eq!(l.text, "naïve = \"é\"");
        assert!(e.render().contains("^^^"), "{}", e.render());
        // A caret at the very end of a line points at nothing, without panicking.
        let e = s.err(&(14..14), "end");
        assert!(e.render().contains("end"));
        let long = format!("k = \"{}\" # x", "y".repeat(400));
        let s = src(&long);
        let e = s.err(&(long.len() - 1..long.len()), "far right");
        assert!(
            e.source_line.is_none(),
            "no snippet past {SNIPPET_BYTES} bytes"
        );
        assert!(e.render().starts_with("error: f.toml:1:"));
        let e = s.err(&(0..1), "near");
        assert_eq!(e.source_line.unwrap().text.len(), SNIPPET_BYTES);
    }
}

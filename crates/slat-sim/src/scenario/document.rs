//! The TOML document behind a scenario: dotted key paths, `set` overrides applied before
//! deserialising, and the mapping between key paths and source lines that gives every error
//! its `file:line`.
//!
//! Errors are located through key paths rather than byte offsets: a serde error's span is
//! turned into the key path it falls in (in the document actually deserialised, overrides
//! included), and that path is then looked up in the original file for its line, or attributed
//! to the override that wrote it. Validation errors carry key paths from the start.

use std::fmt;
use std::ops::Range;

use toml_edit::{ImDocument, Item, Table, Value};

use super::error::{ErrorDetails, ErrorKind, Location, ScenarioError};

/// One step of a key path: a key, or an index into an array (of tables).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// A key path such as `memslot[1].gpa`; empty for the document root.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub(crate) struct DocPath(pub(crate) Vec<Seg>);

impl DocPath {
    pub(crate) fn root() -> Self {
        DocPath(Vec::new())
    }

    /// This path extended by a key.
    pub(crate) fn key(&self, k: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(k.to_string()));
        p
    }

    /// This path extended by an index.
    pub(crate) fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }

    /// Whether `self` is `other` or lies under it.
    pub(crate) fn starts_with(&self, other: &DocPath) -> bool {
        self.0.len() >= other.0.len() && self.0[..other.0.len()] == other.0[..]
    }

    /// Parse `a.b[2].c`. Keys are bare TOML keys (letters, digits, `_`, `-`).
    pub(crate) fn parse(text: &str) -> Result<DocPath, String> {
        let mut segs = Vec::new();
        for part in text.split('.') {
            let (key, mut rest) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return Err(format!("{text:?} is not a dotted key such as policy.recover or memslot[1].gpa"));
            }
            segs.push(Seg::Key(key.to_string()));
            while !rest.is_empty() {
                let close = rest.find(']').ok_or_else(|| format!("{text:?}: unclosed '['"))?;
                let idx: usize =
                    rest[1..close].parse().map_err(|_| format!("{text:?}: {:?} is not an index", &rest[1..close]))?;
                segs.push(Seg::Index(idx));
                rest = &rest[close + 1..];
                if !rest.is_empty() && !rest.starts_with('[') {
                    return Err(format!("{text:?} is not a dotted key such as policy.recover or memslot[1].gpa"));
                }
            }
        }
        Ok(DocPath(segs))
    }
}

impl fmt::Display for DocPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            match s {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A parsed document plus its text, for locating paths.
pub(crate) struct Located {
    doc: ImDocument<String>,
    /// Byte offset of the start of every line after the first, for `line_of` in O(log n).
    line_starts: Vec<usize>,
}

impl Located {
    pub(crate) fn parse(text: &str) -> Result<Located, toml_edit::TomlError> {
        let line_starts = text.bytes().enumerate().filter(|&(_, b)| b == b'\n').map(|(i, _)| i + 1).collect();
        ImDocument::parse(text.to_string()).map(|doc| Located { doc, line_starts })
    }

    fn text(&self) -> &str {
        self.doc.raw()
    }

    /// The 1-based line of byte `offset`.
    pub(crate) fn line_of(&self, offset: usize) -> usize {
        // Lines that start at or before `offset`, plus the first.
        self.line_starts.partition_point(|&start| start <= offset) + 1
    }

    /// The line that best shows `path`: the line of its key, or of its table header, or of the
    /// nearest enclosing one that exists.
    pub(crate) fn line_of_path(&self, path: &DocPath) -> Option<usize> {
        self.walk(path).1.map(|s| self.line_of(s.start))
    }

    /// Whether `path` exists in the document.
    pub(crate) fn contains(&self, path: &DocPath) -> bool {
        self.walk(path).0
    }

    /// The value at `path` as written (cut to 60 characters), if `path` is a plain value.
    pub(crate) fn value_text(&self, path: &DocPath) -> Option<String> {
        let mut node = Node::Table(self.doc.as_table());
        for seg in &path.0 {
            node = node.child(seg)?.0;
        }
        let v = node.value()?;
        let raw = v.span().and_then(|s| self.text().get(s)).map(str::to_string).unwrap_or_else(|| v.to_string());
        let raw = raw.trim().to_string();
        Some(if raw.chars().count() > 60 { format!("{}...", raw.chars().take(57).collect::<String>()) } else { raw })
    }

    /// (whether the whole path exists, span of the deepest existing part).
    fn walk(&self, path: &DocPath) -> (bool, Option<Range<usize>>) {
        let mut node = Node::Table(self.doc.as_table());
        let mut best = None;
        for seg in &path.0 {
            match node.child(seg) {
                Some((child, key_span)) => {
                    if let Some(s) = key_span.or_else(|| child.span()) {
                        best = Some(s);
                    }
                    node = child;
                }
                None => return (false, best),
            }
        }
        (true, best)
    }

    /// The key path of the innermost key, value or table whose span contains `span`.
    pub(crate) fn path_at(&self, span: &Range<usize>) -> DocPath {
        let mut best: Option<(usize, DocPath)> = None;
        let mut path = DocPath::root();
        visit(Node::Table(self.doc.as_table()), &mut path, span, &mut best);
        best.map(|(_, p)| p).unwrap_or_default()
    }
}

/// A walkable node: a table (top-level or from an array of tables), an item or a value.
#[derive(Clone, Copy)]
enum Node<'a> {
    Table(&'a Table),
    Item(&'a Item),
    Value(&'a Value),
}

impl<'a> Node<'a> {
    fn span(self) -> Option<Range<usize>> {
        match self {
            Node::Table(t) => t.span(),
            Node::Item(i) => i.span(),
            Node::Value(v) => v.span(),
        }
    }

    fn value(self) -> Option<&'a Value> {
        match self {
            Node::Item(Item::Value(v)) | Node::Value(v) => Some(v),
            _ => None,
        }
    }

    fn table(self) -> Option<&'a Table> {
        match self {
            Node::Table(t) | Node::Item(Item::Table(t)) => Some(t),
            _ => None,
        }
    }

    fn of_item(item: &'a Item) -> Node<'a> {
        match item {
            Item::Value(v) => Node::Value(v),
            Item::Table(t) => Node::Table(t),
            other => Node::Item(other),
        }
    }

    /// The child at `seg` and the span of its key or header.
    fn child(self, seg: &Seg) -> Option<(Node<'a>, Option<Range<usize>>)> {
        if let Some(t) = self.table() {
            return match seg {
                Seg::Key(k) => t.get_key_value(k).map(|(key, item)| (Node::of_item(item), key.span())),
                Seg::Index(_) => None,
            };
        }
        match (self, seg) {
            (Node::Item(Item::ArrayOfTables(a)), Seg::Index(i)) => a.get(*i).map(|t| (Node::Table(t), t.span())),
            (n, Seg::Key(k)) => match n.value() {
                Some(Value::InlineTable(t)) => t.get_key_value(k).map(|(key, item)| (Node::of_item(item), key.span())),
                _ => None,
            },
            (n, Seg::Index(i)) => match n.value() {
                Some(Value::Array(a)) => a.get(*i).map(|v| (Node::Value(v), v.span())),
                _ => None,
            },
        }
    }
}

fn consider(span: Option<Range<usize>>, path: &DocPath, target: &Range<usize>, best: &mut Option<(usize, DocPath)>) {
    if let Some(s) = span {
        let inside = s.start <= target.start && target.end <= s.end.max(s.start + 1);
        if inside && best.as_ref().is_none_or(|(len, _)| s.len() <= *len) {
            *best = Some((s.len(), path.clone()));
        }
    }
}

fn visit(node: Node<'_>, path: &mut DocPath, target: &Range<usize>, best: &mut Option<(usize, DocPath)>) {
    consider(node.span(), path, target, best);
    if let Some(t) = node.table() {
        for (k, item) in t.iter() {
            path.0.push(Seg::Key(k.to_string()));
            if let Some(key) = t.key(k) {
                consider(key.span(), path, target, best);
            }
            visit(Node::of_item(item), path, target, best);
            path.0.pop();
        }
        return;
    }
    match node {
        Node::Item(Item::ArrayOfTables(a)) => {
            for (i, t) in a.iter().enumerate() {
                path.0.push(Seg::Index(i));
                visit(Node::Table(t), path, target, best);
                path.0.pop();
            }
        }
        n => match n.value() {
            Some(Value::Array(a)) => {
                for (i, v) in a.iter().enumerate() {
                    path.0.push(Seg::Index(i));
                    visit(Node::Value(v), path, target, best);
                    path.0.pop();
                }
            }
            Some(Value::InlineTable(t)) => {
                for (k, v) in t.iter() {
                    path.0.push(Seg::Key(k.to_string()));
                    if let Some(key) = t.key(k) {
                        consider(key.span(), path, target, best);
                    }
                    visit(Node::Value(v), path, target, best);
                    path.0.pop();
                }
            }
            _ => {}
        },
    }
}

/// One `set(key, value)` override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// The dotted key, such as `policy.recover` or `memslot[1].gpa`.
    pub key: String,
    /// The value as given: a TOML value (`4096`, `true`, `"4K"`, `[1, 2]`), or else taken as a
    /// string (`zap`, `in-place`, `2M`).
    pub value: String,
}

impl Override {
    pub(crate) fn path(&self) -> DocPath {
        DocPath::parse(&self.key).unwrap_or_default()
    }

    /// The override's value as a TOML value.
    pub(crate) fn toml_value(&self) -> Value {
        let t = self.value.trim();
        t.parse::<Value>().unwrap_or_else(|_| Value::from(t))
    }
}

/// A mutable place in a document being overridden.
enum Place<'a> {
    Item(&'a mut Item),
    Table(&'a mut Table),
}

impl<'a> Place<'a> {
    fn table(self) -> Result<&'a mut Table, Place<'a>> {
        match self {
            Place::Table(t) => Ok(t),
            Place::Item(item) => {
                if item.is_none() {
                    *item = Item::Table(Table::new());
                }
                match item {
                    Item::Table(t) => Ok(t),
                    other => Err(Place::Item(other)),
                }
            }
        }
    }
}

/// Write `ov` into `doc`, creating missing tables; the error says which part of the key does
/// not lead anywhere.
pub(crate) fn apply_override(doc: &mut toml_edit::DocumentMut, ov: &Override) -> Result<(), String> {
    let path = DocPath::parse(&ov.key)?;
    let Some((last, parents)) = path.0.split_last() else {
        return Err("empty key".into());
    };
    let mut place = Place::Table(doc.as_table_mut());
    let mut walked = DocPath::root();
    for seg in parents {
        place = step(place, seg, &walked)?;
        walked.0.push(seg.clone());
    }
    let here = if walked.0.is_empty() { "the document".to_string() } else { walked.to_string() };
    let value = ov.toml_value();
    match last {
        Seg::Key(k) => match place.table() {
            Ok(t) => {
                t.insert(k, Item::Value(value));
                Ok(())
            }
            Err(Place::Item(Item::Value(Value::InlineTable(t)))) => {
                t.insert(k, value);
                Ok(())
            }
            Err(_) => Err(format!("{here} is a value, not a table: it has no key {k:?}")),
        },
        Seg::Index(i) => match place {
            Place::Item(Item::Value(Value::Array(a))) if *i < a.len() => {
                a.replace(*i, value);
                Ok(())
            }
            Place::Item(Item::Value(Value::Array(a))) => {
                Err(format!("{here} has {}; no entry [{i}]", entries(a.len())))
            }
            _ => Err(format!("{here}[{i}] is not a value that can be set; set one of its keys")),
        },
    }
}

fn entries(n: usize) -> String {
    if n == 1 {
        "1 entry".to_string()
    } else {
        format!("{n} entries")
    }
}

fn step<'a>(place: Place<'a>, seg: &Seg, walked: &DocPath) -> Result<Place<'a>, String> {
    let here = if walked.0.is_empty() { "the document".to_string() } else { walked.to_string() };
    match seg {
        Seg::Key(k) => match place.table() {
            Ok(t) => Ok(Place::Item(t.entry(k).or_insert_with(|| Item::Table(Table::new())))),
            Err(Place::Item(Item::Value(Value::InlineTable(_)))) => {
                Err(format!("{here} is an inline table; set {here} as a whole, or write it as a [table] in the file"))
            }
            Err(_) => Err(format!("{here} is a value, not a table: it has no key {k:?}")),
        },
        Seg::Index(i) => match place {
            Place::Item(Item::ArrayOfTables(a)) => {
                let len = a.len();
                a.get_mut(*i).map(Place::Table).ok_or_else(|| format!("{here} has {}; no entry [{i}]", entries(len)))
            }
            _ => Err(format!("{here} is not an array of tables; it has no entry [{i}]")),
        },
    }
}

/// Turns key paths into locations: the original file's lines, or the override that wrote them.
pub(crate) struct Locator<'a> {
    pub(crate) file: &'a str,
    pub(crate) original: &'a Located,
    pub(crate) effective: &'a Located,
    pub(crate) overrides: &'a [Override],
}

impl Locator<'_> {
    /// The override responsible for `path`, if any: the path was written by an override, lies
    /// under one, or was created by one (a new key that the file does not have).
    fn override_for(&self, path: &DocPath) -> Option<&Override> {
        self.overrides.iter().rev().find(|o| {
            let op = o.path();
            path.starts_with(&op) || (op.starts_with(path) && !self.original.contains(path))
        })
    }

    pub(crate) fn location(&self, path: &DocPath) -> Location {
        if let Some(o) = self.override_for(path) {
            return Location::Override { file: self.file.to_string(), key: o.key.clone(), value: o.value.clone() };
        }
        match self.original.line_of_path(path) {
            Some(line) => Location::Line { file: self.file.to_string(), line },
            None => Location::File { file: self.file.to_string() },
        }
    }

    /// An error about `path`.
    pub(crate) fn error(&self, path: &DocPath, kind: ErrorKind, message: impl Into<String>) -> ScenarioError {
        ErrorDetails {
            location: self.location(path),
            field: if path.0.is_empty() { None } else { Some(path.to_string()) },
            value: self.effective.value_text(path),
            message: message.into(),
            kind,
            io: None,
        }
        .into()
    }

    /// Turn a serde error from deserialising the effective document into a located error.
    pub(crate) fn serde_error(&self, err: &toml::de::Error) -> ScenarioError {
        let path = err.span().map(|s| self.effective.path_at(&s)).unwrap_or_default();
        let (kind, message) = classify(err.message());
        let e = self.error(&path, kind, message);
        if kind == ErrorKind::UnknownField || kind == ErrorKind::MissingField {
            e.without_value()
        } else {
            e
        }
    }
}

/// Sort serde's messages into kinds and rewrite them in the scenario's words (quoted names, the
/// unknown key already in the path).
fn classify(message: &str) -> (ErrorKind, String) {
    let message = message.trim();
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let accepted = rest.split_once(", expected ").map(|(_, list)| list).unwrap_or("");
        let names = backticked(accepted);
        let msg = if names.is_empty() {
            "unknown field; this table takes no fields".to_string()
        } else {
            format!("unknown field; expected one of {}", super::names::quoted_list(names.iter().map(String::as_str)))
        };
        return (ErrorKind::UnknownField, msg);
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or(rest);
        return (ErrorKind::MissingField, format!("missing field \"{name}\""));
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let accepted = rest.split_once(", expected ").map(|(_, list)| list).unwrap_or("");
        let names = backticked(accepted);
        return (
            ErrorKind::BadValue,
            format!("expected one of {}", super::names::quoted_list(names.iter().map(String::as_str))),
        );
    }
    (ErrorKind::BadValue, message.replace('`', "\""))
}

/// The names between backticks in serde's "expected one of `a`, `b`" lists.
fn backticked(list: &str) -> Vec<String> {
    list.split('`').skip(1).step_by(2).map(str::to_string).collect()
}

//! Object paths that cannot escape their root.
//!
//! Every URI Firn reads, writes or deletes is parsed here first, once, into an
//! [`ObjectPath`]: a value that only [`Root::object`] constructs and that is proven to lie
//! strictly below the warehouse root. A table's directory is a [`Location`]; an object a
//! table may delete is an [`Owned`] path, which only [`TableScope::own`] constructs after
//! proving the object lies under one of the table's own directories. The warehouse reads
//! and writes only `ObjectPath`s and deletes only `Owned` ones, so no code path can touch an
//! object it did not check.
//!
//! Parsing is strict rather than clever: a URI is refused (never "repaired") when it
//! - is not `scheme://authority/path` of the warehouse's own scheme and bucket (Hadoop's
//!   `file:/x` spelling of `file:///x` is accepted and stored canonically),
//! - has a query, a fragment, a backslash or a control character,
//! - has an empty segment (`//`, a trailing `/` on an object), a segment longer than 255
//!   bytes (no local file system takes it), a `.` or `..` segment, or a
//!   segment whose percent-decoding is `.` or `..` or contains `/`, `\` or a control
//!   character (URL parsers and other engines would resolve those differently).
//!
//! The object key is the path exactly as written, not percent-decoded: that is how Java
//! Iceberg (Hadoop and S3 file IO) and PyIceberg read a `file_path`, so Firn names the
//! same object they do. Containment is decided on parsed keys segment by segment, never by
//! comparing strings.

use std::fmt;

use object_store::path::Path as StorePath;
use percent_encoding::percent_decode_str;

/// Longest URI accepted (S3 keys are at most 1,024 bytes; local paths rarely 4,096).
pub const MAX_URI_BYTES: usize = 4096;

/// Why a URI was refused. The message names the URI and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError(pub String);

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn refuse(uri: &str, why: impl fmt::Display) -> PathError {
    let shown: String = uri.chars().take(300).collect();
    PathError(format!("{shown:?} {why}"))
}

/// The root a warehouse's paths must lie under: scheme, authority (the bucket, or empty)
/// and key prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    scheme: String,
    authority: String,
    prefix: Vec<String>,
}

/// A parsed URI: scheme, authority and its key's segments, checked but not yet confined.
struct Parsed {
    scheme: String,
    authority: String,
    segments: Vec<String>,
}

fn parse(uri: &str, directory: bool) -> Result<Parsed, PathError> {
    if uri.len() > MAX_URI_BYTES {
        return Err(refuse(uri, format!("is longer than {MAX_URI_BYTES} bytes")));
    }
    if let Some(c) = uri
        .chars()
        .find(|c| c.is_control() || matches!(c, '\\' | '?' | '#'))
    {
        return Err(refuse(uri, format!("contains {c:?}")));
    }
    let (scheme, rest) = uri
        .split_once(':')
        .ok_or_else(|| refuse(uri, "is not an absolute URI (scheme://...)"))?;
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return Err(refuse(uri, "has no valid scheme"));
    }
    let scheme = scheme.to_ascii_lowercase();
    let rest = match rest.strip_prefix("//") {
        Some(r) => r,
        // Hadoop writes local paths as `file:/x`.
        None if scheme == "file" && rest.starts_with('/') => rest,
        None => return Err(refuse(uri, "is not of the form scheme://authority/path")),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let path = if directory {
        path.strip_suffix('/').unwrap_or(path)
    } else {
        path
    };
    let mut segments = Vec::new();
    if !path.is_empty() {
        for seg in path.split('/') {
            check_segment(uri, seg)?;
            segments.push(seg.to_string());
        }
    }
    Ok(Parsed {
        scheme,
        authority: authority.to_string(),
        segments,
    })
}

/// Longest path segment: the longest file name local file systems allow.
pub const MAX_SEGMENT_BYTES: usize = 255;

fn check_segment(uri: &str, seg: &str) -> Result<(), PathError> {
    if seg.is_empty() {
        return Err(refuse(uri, "has an empty path segment"));
    }
    if seg.len() > MAX_SEGMENT_BYTES {
        return Err(refuse(
            uri,
            format!("has a segment longer than {MAX_SEGMENT_BYTES} bytes"),
        ));
    }
    let decoded = percent_decode_str(seg).decode_utf8_lossy();
    if matches!(decoded.as_ref(), "." | "..") {
        return Err(refuse(uri, format!("has a relative segment {seg:?}")));
    }
    if let Some(c) = decoded
        .chars()
        .find(|c| c.is_control() || matches!(c, '/' | '\\'))
    {
        return Err(refuse(
            uri,
            format!("has a segment {seg:?} that decodes to {c:?}"),
        ));
    }
    Ok(())
}

impl Root {
    /// The root of a warehouse URL (`file:///dir`, `s3://bucket/prefix`, `memory:///`).
    pub fn parse(url: &str) -> Result<Self, PathError> {
        let p = parse(url, true)?;
        Ok(Self {
            scheme: p.scheme,
            authority: p.authority,
            prefix: p.segments,
        })
    }

    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// How many key segments the root itself has.
    pub fn prefix_len(&self) -> usize {
        self.prefix.len()
    }

    /// The root URL, ending in `/`.
    pub fn url(&self) -> String {
        let mut s = format!("{}://{}/", self.scheme, self.authority);
        for seg in &self.prefix {
            s.push_str(seg);
            s.push('/');
        }
        s
    }

    fn confine(&self, uri: &str, p: Parsed) -> Result<(String, Vec<String>), PathError> {
        if p.scheme != self.scheme {
            return Err(refuse(
                uri,
                format!(
                    "is outside the warehouse {} (not in its {} store)",
                    self.url(),
                    self.scheme
                ),
            ));
        }
        if p.authority != self.authority {
            return Err(refuse(
                uri,
                match self.authority.as_str() {
                    "" => "names a host; local paths have none".to_string(),
                    b => format!(
                        "is outside the warehouse {} (not in bucket {b})",
                        self.url()
                    ),
                },
            ));
        }
        if p.segments.len() <= self.prefix.len() || !p.segments.starts_with(&self.prefix) {
            return Err(refuse(
                uri,
                format!("is outside the warehouse {}", self.url()),
            ));
        }
        let canonical = format!(
            "{}://{}/{}",
            self.scheme,
            self.authority,
            p.segments.join("/")
        );
        Ok((canonical, p.segments))
    }

    /// An object below this root.
    pub fn object(&self, uri: &str) -> Result<ObjectPath, PathError> {
        let (uri_c, segments) = self.confine(uri, parse(uri, false)?)?;
        Ok(ObjectPath::new(uri_c, &segments))
    }

    /// A directory below this root (a trailing `/` is dropped).
    pub fn location(&self, uri: &str) -> Result<Location, PathError> {
        let (uri_c, segments) = self.confine(uri, parse(uri, true)?)?;
        Ok(Location {
            uri: uri_c,
            segments,
        })
    }

    /// Whether `uri` names something strictly below this root.
    pub fn holds(&self, uri: &str) -> bool {
        parse(uri, true).is_ok_and(|p| self.confine(uri, p).is_ok())
    }

    /// Whether one of two roots is, or lies inside, the other: then an object could belong
    /// to both, so two warehouses may not have such roots.
    pub fn overlaps(&self, other: &Root) -> bool {
        let n = self.prefix.len().min(other.prefix.len());
        self.scheme == other.scheme
            && self.authority == other.authority
            && self.prefix[..n] == other.prefix[..n]
    }

    /// The object of a key listed from this root's store.
    pub fn object_of_key(&self, key: &StorePath) -> Result<ObjectPath, PathError> {
        self.object(&format!("{}://{}/{}", self.scheme, self.authority, key))
    }
}

/// The store key of checked segments, as written. Every segment passed `check_segment`,
/// which is stricter than `Path::parse` (so the fallback, which would percent-encode, is
/// never taken).
fn key_of(segments: &[String]) -> StorePath {
    StorePath::parse(segments.join("/"))
        .unwrap_or_else(|_| StorePath::from_iter(segments.iter().map(String::as_str)))
}

/// An object URI proven to lie strictly below a warehouse root, in canonical spelling.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectPath {
    uri: String,
    key: StorePath,
    segments: usize,
}

impl ObjectPath {
    fn new(uri: String, segments: &[String]) -> Self {
        let key = key_of(segments);
        Self {
            uri,
            key,
            segments: segments.len(),
        }
    }

    /// The canonical URI (what Firn stores and hands to readers).
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The object's key in the warehouse's store.
    pub fn key(&self) -> &StorePath {
        &self.key
    }

    /// The object's segments, from the store's root.
    pub fn parts(&self) -> impl Iterator<Item = String> + '_ {
        self.key.parts().map(|p| p.as_ref().to_string())
    }

    /// Whether this object lies strictly below `dir`.
    pub fn is_under(&self, dir: &Location) -> bool {
        self.segments > dir.segments.len()
            && self
                .key
                .parts()
                .zip(&dir.segments)
                .all(|(a, b)| a.as_ref() == b)
    }
}

impl fmt::Display for ObjectPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

/// A directory (a table's location, its data or metadata path) strictly below a warehouse
/// root, in canonical spelling without a trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    uri: String,
    segments: Vec<String>,
}

impl Location {
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The directory's key in the warehouse's store (its segments as written, like an
    /// [`ObjectPath`]'s).
    pub fn key(&self) -> StorePath {
        key_of(&self.segments)
    }

    /// Whether `self` and `other` are the same directory or one contains the other.
    pub fn overlaps(&self, other: &Location) -> bool {
        let n = self.segments.len().min(other.segments.len());
        self.segments[..n] == other.segments[..n]
    }

    /// Whether `other` lies strictly below `self`.
    pub fn contains(&self, other: &Location) -> bool {
        other.segments.len() > self.segments.len() && other.segments.starts_with(&self.segments)
    }

    /// An object below this directory, named by a relative path of checked segments.
    pub fn child(&self, relative: &str) -> Result<ObjectPath, PathError> {
        let uri = format!("{}/{relative}", self.uri);
        let mut segments = self.segments.clone();
        for seg in relative.split('/') {
            check_segment(&uri, seg)?;
            segments.push(seg.to_string());
        }
        Ok(ObjectPath::new(uri, &segments))
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

/// The directories a table owns: its location and, when they are valid, its
/// `write.data.path` and `write.metadata.path`. Only objects under them are ever deleted on
/// the table's behalf.
#[derive(Debug, Clone)]
pub struct TableScope {
    dirs: Vec<Location>,
}

/// An object a table owns: the only kind of path the warehouse deletes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owned(ObjectPath);

impl Owned {
    pub fn path(&self) -> &ObjectPath {
        &self.0
    }

    pub fn uri(&self) -> &str {
        self.0.uri()
    }
}

impl TableScope {
    /// The scope of a table at `location` whose extra directories are `extra` (already
    /// checked to lie in the warehouse and in no other table).
    pub fn new(location: Location, extra: impl IntoIterator<Item = Location>) -> Self {
        let mut dirs = vec![location];
        dirs.extend(extra);
        Self { dirs }
    }

    /// The table's own location.
    pub fn location(&self) -> &Location {
        &self.dirs[0]
    }

    /// The table's directories.
    pub fn dirs(&self) -> &[Location] {
        &self.dirs
    }

    /// `path`, if the table owns it.
    pub fn own(&self, path: &ObjectPath) -> Option<Owned> {
        self.dirs
            .iter()
            .any(|d| path.is_under(d))
            .then(|| Owned(path.clone()))
    }

    /// Whether the table owns `path`.
    pub fn owns(&self, path: &ObjectPath) -> bool {
        self.dirs.iter().any(|d| path.is_under(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> Root {
        Root::parse("file:///w/h").unwrap()
    }

    #[test]
    fn canonical_objects_are_accepted_and_others_refused() {
        let r = root();
        let o = r.object("file:///w/h/t/data/a.parquet").unwrap();
        assert_eq!(o.uri(), "file:///w/h/t/data/a.parquet");
        assert_eq!(o.key().as_ref(), "w/h/t/data/a.parquet");
        // Hadoop's spelling is the same file.
        assert_eq!(r.object("file:/w/h/t/a").unwrap().uri(), "file:///w/h/t/a");
        // Percent-encoding is kept as written (as Java Iceberg reads it), for objects and
        // directories alike, so a directory's key prefixes its objects' keys.
        assert_eq!(
            r.object("file:///w/h/t/ts=10%3A00/a")
                .unwrap()
                .key()
                .as_ref(),
            "w/h/t/ts=10%3A00/a"
        );
        assert_eq!(
            r.location("file:///w/h/t/ts=10%3A00")
                .unwrap()
                .key()
                .as_ref(),
            "w/h/t/ts=10%3A00"
        );
        for bad in [
            "file:///w/h/t/../../etc/passwd",
            "file:///w/h/t/%2e%2e/%2E%2e/x",
            "file:///w/h/t/.%2E/x",
            "file:///w/h/t/%2e/x",
            "file:///w/h/t\\..\\..\\x",
            "file:///w/h/t/a%2fb",
            "file:///w/h/t/a%5Cb",
            "file:///w/h/t//a",
            "file:///w/h/t/a/",
            "file:///w/h/t/a?x=1",
            "file:///w/h/t/a#f",
            "file:///w/h/t/a\0b",
            "file:///w/h/t/a%00b",
            "file://host/w/h/t/a",
            "file:///w/hx/a",
            "file:///w/h",
            "file:///w",
            "s3://b/w/h/a",
            "w/h/a",
            "/w/h/a",
            "",
            "http://x/w/h/a",
        ] {
            assert!(r.object(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn containment_is_by_segment() {
        let r = root();
        let t = r.location("file:///w/h/ns/t/").unwrap();
        assert_eq!(t.uri(), "file:///w/h/ns/t");
        let t2 = r.location("file:///w/h/ns/t2").unwrap();
        let sub = r.location("file:///w/h/ns/t/data/sub").unwrap();
        let ns = r.location("file:///w/h/ns").unwrap();
        assert!(!t.overlaps(&t2) && !t2.overlaps(&t));
        assert!(t.overlaps(&sub) && sub.overlaps(&t) && ns.overlaps(&t));
        assert!(t.contains(&sub) && !sub.contains(&t) && !t.contains(&t));
        assert!(r.object("file:///w/h/ns/t/x").unwrap().is_under(&t));
        assert!(!r.object("file:///w/h/ns/t2/x").unwrap().is_under(&t));
        assert!(!r.object("file:///w/h/ns/tx").unwrap().is_under(&t));
        let scope = TableScope::new(t.clone(), [r.location("file:///w/h/elsewhere").unwrap()]);
        assert!(
            scope
                .own(&r.object("file:///w/h/elsewhere/f").unwrap())
                .is_some()
        );
        assert!(
            scope
                .own(&r.object("file:///w/h/ns/t2/f").unwrap())
                .is_none()
        );
        assert!(t.child("data/a.parquet").unwrap().is_under(&t));
        assert!(t.child("data/../../x").is_err());
        assert!(t.child("data/%2e%2e/x").is_err());
        assert!(t.child("").is_err());
    }

    /// What other parsers would make of an accepted URI: percent-decode every segment,
    /// then resolve `.` and `..` as RFC 3986 does. It must still lie under the root.
    fn resolved_elsewhere(path: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for seg in path.split(['/', '\\']) {
            let seg = percent_decode_str(seg).decode_utf8_lossy().to_string();
            for part in seg.split(['/', '\\']) {
                match part {
                    "" | "." => {}
                    ".." => {
                        out.pop();
                    }
                    p => out.push(p.to_string()),
                }
            }
        }
        out
    }

    fn segment() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            Just("a".to_string()),
            Just("data".to_string()),
            Just("..".to_string()),
            Just(".".to_string()),
            Just("%2e%2e".to_string()),
            Just("%2E.".to_string()),
            Just(".%2e".to_string()),
            Just("%2e".to_string()),
            Just("%2f".to_string()),
            Just("..%2f..".to_string()),
            Just("%5c".to_string()),
            Just("..\\..".to_string()),
            Just(String::new()),
            Just("x%20y".to_string()),
            Just("%".to_string()),
            Just("%zz".to_string()),
            Just("%00".to_string()),
            Just("ts=10%3A00".to_string()),
            "[a-z.%]{1,6}",
        ]
    }

    proptest::proptest! {
        // Random cases, replayable: a failure prints the case, and PROPTEST_RNG_SEED=<n>
        // reruns a seed.
        #![proptest_config(proptest::test_runner::Config {
            cases: 2000,
            failure_persistence: None,
            ..proptest::test_runner::Config::default()
        })]

        /// No accepted path resolves outside its root, however it is encoded; and a table's
        /// child paths stay in the table.
        #[test]
        fn no_accepted_path_resolves_outside_its_root(
            prefix in proptest::sample::select(vec![
                "file:///w/h/", "file:/w/h/", "FILE:///w/h/", "file://host/w/h/",
                "file:///w/h/t/", "file:///w/", "s3://b/w/h/", "file:///w/h",
            ]),
            segments in proptest::collection::vec(segment(), 0..8),
        ) {
            let r = root();
            let rel = segments.join("/");
            let uri = format!("{prefix}{rel}");
            if let Ok(p) = r.object(&uri) {
                let parts: Vec<String> = p.parts().collect();
                proptest::prop_assert!(parts.len() > 2 && parts[..2] == ["w", "h"], "{uri}");
                let path = p.uri().strip_prefix("file://").unwrap();
                let elsewhere = resolved_elsewhere(path);
                proptest::prop_assert!(
                    elsewhere.len() > 2 && elsewhere[..2] == ["w", "h"],
                    "{uri} resolves to {elsewhere:?}"
                );
                // The url crate (which resolves %2e segments) agrees.
                let url = url::Url::parse(p.uri()).unwrap();
                proptest::prop_assert!(url.path().starts_with("/w/h/"), "{uri}: {url}");
            }
            let t = r.location("file:///w/h/t").unwrap();
            if let Ok(p) = t.child(&rel) {
                proptest::prop_assert!(p.is_under(&t), "{rel}");
                let elsewhere = resolved_elsewhere(p.uri().strip_prefix("file://").unwrap());
                proptest::prop_assert!(
                    elsewhere.len() > 3 && elsewhere[..3] == ["w", "h", "t"],
                    "{rel} resolves to {elsewhere:?}"
                );
            }
        }
    }

    #[test]
    fn s3_roots_confine_to_their_bucket_and_prefix() {
        let r = Root::parse("s3://bucket/wh").unwrap();
        assert_eq!(r.url(), "s3://bucket/wh/");
        assert!(r.object("s3://bucket/wh/t/a").is_ok());
        assert!(r.object("S3://bucket/wh/t/a").is_ok());
        assert!(r.object("s3://other/wh/t/a").is_err());
        assert!(r.object("s3://bucket/whx/t/a").is_err());
        assert!(r.object("s3://bucket/t/a").is_err());
        let m = Root::parse("memory:///").unwrap();
        assert_eq!(m.url(), "memory:///");
        assert!(m.object("memory:///t/a").is_ok());
        assert!(m.object("memory:///").is_err());
    }
}

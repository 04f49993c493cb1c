//! Cache-Control parsing (RFC 9111 §5.2, RFC 9110 §5.6) and RFC 9213 targeted fields.
//!
//! Parsing is lenient where the RFCs ask recipients to be (both argument forms, any case, any
//! number of lines) and strict where a guess could make a response look fresher than it is: a
//! broken list member is dropped on its own, and a broken delta-seconds makes the response stale.

use super::PolicyConfig;
use http::header::{CACHE_CONTROL, PRAGMA};
use http::{HeaderMap, HeaderName};

/// A delta-seconds argument: a valid value (saturated at 2^31 per RFC 9111 §1.2.2), or present
/// but invalid (missing, negative, non-numeric, or conflicting duplicates), which makes the
/// response stale (RFC 9111 §4.2.1: "either the first occurrence should be used or the response
/// should be considered stale"; we pick stale for conflicting duplicates, equal duplicates are fine).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delta {
    Seconds(u64),
    Invalid,
}

/// The response directives that matter to a cache.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ResponseDirectives {
    pub(crate) no_store: bool,
    /// None: absent. Some(empty): unqualified no-cache. Some(names): no-cache="a, b" (lower-case).
    pub(crate) no_cache: Option<Vec<HeaderName>>,
    /// Same convention as `no_cache`.
    pub(crate) private: Option<Vec<HeaderName>>,
    pub(crate) public: bool,
    pub(crate) must_revalidate: bool,
    pub(crate) proxy_revalidate: bool,
    pub(crate) must_understand: bool,
    pub(crate) immutable: bool,
    pub(crate) max_age: Option<Delta>,
    pub(crate) s_maxage: Option<Delta>,
    /// Seconds (RFC 5861 §3).
    pub(crate) stale_while_revalidate: Option<u64>,
    /// Seconds (RFC 5861 §4).
    pub(crate) stale_if_error: Option<u64>,
}

/// The request directives that matter to a cache.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RequestDirectives {
    /// Also Pragma: no-cache when no Cache-Control line is present (§5.4).
    pub(crate) no_cache: bool,
    pub(crate) no_store: bool,
    pub(crate) only_if_cached: bool,
    /// Invalid values are ignored.
    pub(crate) max_age: Option<u64>,
    /// None: absent; Some(None): max-stale with no value (any staleness); Some(Some(n)).
    pub(crate) max_stale: Option<Option<u64>>,
    pub(crate) min_fresh: Option<u64>,
    pub(crate) stale_if_error: Option<u64>,
}

/// RFC 9111 §1.2.2: the largest delta-seconds a cache has to represent.
pub(crate) const DELTA_MAX: u64 = 1 << 31;

/// `delta-seconds = 1*DIGIT`, saturated at 2^31 (RFC 9111 §1.2.2). Anything else is None.
pub(crate) fn parse_delta(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: u64 = 0;
    for &b in v {
        n = n
            .saturating_mul(10)
            .saturating_add(u64::from(b.saturating_sub(b'0')));
        if n >= DELTA_MAX {
            return Some(DELTA_MAX);
        }
    }
    Some(n)
}

/// RFC 9110 §5.6.2 tchar.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

pub(crate) fn is_token(v: &[u8]) -> bool {
    !v.is_empty() && v.iter().all(|&b| is_tchar(b))
}

pub(crate) fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Removes leading and trailing OWS, which is never part of a field value (RFC 9110 §5.5).
pub(crate) fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = v {
        if !is_ows(*first) {
            break;
        }
        v = rest;
    }
    while let [rest @ .., last] = v {
        if !is_ows(*last) {
            break;
        }
        v = rest;
    }
    v
}

/// Index just past the quoted-string starting at `start` (which holds the opening DQUOTE), or
/// None when it is unterminated. Backslash escapes one octet (RFC 9110 §5.6.4).
fn quoted_end(v: &[u8], start: usize) -> Option<usize> {
    let mut i = start.saturating_add(1);
    while let Some(&b) = v.get(i) {
        match b {
            b'"' => return Some(i.saturating_add(1)),
            b'\\' => i = i.saturating_add(2),
            _ => i = i.saturating_add(1),
        }
    }
    None
}

/// The content of a quoted-string with its escapes removed; `v` includes both DQUOTEs.
fn unquote(v: &[u8]) -> Vec<u8> {
    let inner = v.get(1..v.len().saturating_sub(1)).unwrap_or_default();
    let mut out = Vec::with_capacity(inner.len());
    let mut escaped = false;
    for &b in inner {
        if !escaped && b == b'\\' {
            escaped = true;
        } else {
            out.push(b);
            escaped = false;
        }
    }
    out
}

/// The members of a comma-separated list (RFC 9110 §5.6.1): commas inside quoted-strings do not
/// split, members are trimmed, and empty members are dropped.
pub(crate) fn split_list(v: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while let Some(&b) = v.get(i) {
        match b {
            b'"' => i = quoted_end(v, i).unwrap_or(v.len()),
            b',' => {
                let member = trim_ows(v.get(start..i).unwrap_or_default());
                if !member.is_empty() {
                    out.push(member);
                }
                i = i.saturating_add(1);
                start = i;
            }
            _ => i = i.saturating_add(1),
        }
    }
    let member = trim_ows(v.get(start..).unwrap_or_default());
    if !member.is_empty() {
        out.push(member);
    }
    out
}

/// One parsed cache directive: the lower-cased name and the argument, unquoted.
#[derive(Debug, Clone, PartialEq)]
struct Directive {
    name: String,
    value: Option<Vec<u8>>,
}

/// `cache-directive = token [ "=" ( token / quoted-string ) ]`; a member that does not match is
/// dropped (only that member: the others on the line still count).
fn parse_member(member: &[u8]) -> Option<Directive> {
    let name_end = member
        .iter()
        .position(|&b| !is_tchar(b))
        .unwrap_or(member.len());
    let name = member.get(..name_end).unwrap_or_default();
    if name.is_empty() {
        return None;
    }
    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
    let rest = member.get(name_end..).unwrap_or_default();
    let value = match rest {
        [] => None,
        [b'=', arg @ ..] => {
            if arg.first() == Some(&b'"') {
                if quoted_end(arg, 0) != Some(arg.len()) {
                    return None;
                }
                Some(unquote(arg))
            } else if arg.iter().all(|&b| is_tchar(b)) {
                // An empty token argument ("max-age=") is kept as an invalid argument.
                Some(arg.to_vec())
            } else {
                return None;
            }
        }
        _ => return None,
    };
    Some(Directive { name, value })
}

fn parse_lines<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Vec<Directive> {
    lines
        .flat_map(split_list)
        .filter_map(parse_member)
        .collect()
}

/// Field names of a qualified no-cache / private argument, lower-cased; invalid names dropped.
fn field_names(v: &[u8]) -> Vec<HeaderName> {
    let mut out: Vec<HeaderName> = Vec::new();
    for member in split_list(v) {
        if let Ok(name) = HeaderName::from_bytes(member)
            && !out.contains(&name)
        {
            out.push(name);
        }
    }
    out
}

/// Accumulates no-cache / private occurrences: any unqualified one wins, qualified ones merge.
#[derive(Default)]
struct Qualified {
    present: bool,
    unqualified: bool,
    names: Vec<HeaderName>,
}

impl Qualified {
    fn unqualified(&mut self) {
        self.present = true;
        self.unqualified = true;
    }

    fn qualified(&mut self, names: Vec<HeaderName>) {
        self.present = true;
        if names.is_empty() {
            // An empty list cannot be told apart from the unqualified form; take the stricter one.
            self.unqualified = true;
        }
        for n in names {
            if !self.names.contains(&n) {
                self.names.push(n);
            }
        }
    }

    fn finish(self) -> Option<Vec<HeaderName>> {
        match (self.present, self.unqualified) {
            (false, _) => None,
            (true, true) => Some(Vec::new()),
            (true, false) => Some(self.names),
        }
    }
}

/// Equal duplicates are one value; anything else is invalid (RFC 9111 §4.2.1).
fn combine_deltas(values: &[Option<u64>]) -> Option<Delta> {
    let first = values.first()?;
    match first {
        Some(v) if values.iter().all(|x| x == first) => Some(Delta::Seconds(*v)),
        _ => Some(Delta::Invalid),
    }
}

fn interpret_response(directives: &[Directive]) -> ResponseDirectives {
    let mut r = ResponseDirectives::default();
    let (mut no_cache, mut private) = (Qualified::default(), Qualified::default());
    let (mut max_age, mut s_maxage) = (Vec::new(), Vec::new());
    for d in directives {
        let arg = d.value.as_deref();
        match d.name.as_str() {
            "no-store" => r.no_store = true,
            "public" => r.public = true,
            "must-revalidate" => r.must_revalidate = true,
            "proxy-revalidate" => r.proxy_revalidate = true,
            "must-understand" => r.must_understand = true,
            "immutable" => r.immutable = true,
            "no-cache" => match arg {
                None => no_cache.unqualified(),
                Some(v) => no_cache.qualified(field_names(v)),
            },
            "private" => match arg {
                None => private.unqualified(),
                Some(v) => private.qualified(field_names(v)),
            },
            "max-age" => max_age.push(arg.and_then(parse_delta)),
            "s-maxage" => s_maxage.push(arg.and_then(parse_delta)),
            "stale-while-revalidate" => {
                r.stale_while_revalidate = r.stale_while_revalidate.or(arg.and_then(parse_delta));
            }
            "stale-if-error" => {
                r.stale_if_error = r.stale_if_error.or(arg.and_then(parse_delta));
            }
            _ => {}
        }
    }
    r.no_cache = no_cache.finish();
    r.private = private.finish();
    r.max_age = combine_deltas(&max_age);
    r.s_maxage = combine_deltas(&s_maxage);
    r
}

/// The response's cache directives: from the first usable targeted field when the cache is
/// shared and has some (RFC 9213 §2.2), else from Cache-Control. Nothing when the configuration
/// ignores response headers.
pub(crate) fn response_directives(headers: &HeaderMap, cfg: &PolicyConfig) -> ResponseDirectives {
    if !cfg.honour_headers {
        return ResponseDirectives::default();
    }
    if let Some(d) = targeted_directives(headers, cfg) {
        return d;
    }
    interpret_response(&parse_lines(
        headers.get_all(CACHE_CONTROL).iter().map(|v| v.as_bytes()),
    ))
}

/// Whether the response's freshness comes from a targeted field (then Expires is ignored too).
pub(crate) fn uses_targeted_field(headers: &HeaderMap, cfg: &PolicyConfig) -> bool {
    cfg.honour_headers && targeted_directives(headers, cfg).is_some()
}

/// The request's cache directives (RFC 9111 §5.2.1), with Pragma: no-cache as a fallback (§5.4).
pub(crate) fn request_directives(headers: &HeaderMap) -> RequestDirectives {
    let mut r = RequestDirectives::default();
    let cc = headers.get_all(CACHE_CONTROL);
    for d in parse_lines(cc.iter().map(|v| v.as_bytes())) {
        let arg = d.value.as_deref();
        match d.name.as_str() {
            "no-cache" => r.no_cache = true,
            "no-store" => r.no_store = true,
            "only-if-cached" => r.only_if_cached = true,
            "max-age" => r.max_age = r.max_age.or(arg.and_then(parse_delta)),
            "min-fresh" => r.min_fresh = r.min_fresh.or(arg.and_then(parse_delta)),
            "stale-if-error" => r.stale_if_error = r.stale_if_error.or(arg.and_then(parse_delta)),
            "max-stale" if r.max_stale.is_none() => {
                r.max_stale = match arg {
                    None => Some(None),
                    // An invalid argument is ignored rather than read as "any staleness".
                    Some(v) => parse_delta(v).map(Some),
                };
            }
            _ => {}
        }
    }
    if cc.iter().next().is_none() {
        let pragma = parse_lines(headers.get_all(PRAGMA).iter().map(|v| v.as_bytes()));
        r.no_cache = pragma.iter().any(|d| d.name == "no-cache");
    }
    r
}

/// The directives of the first targeted field on the target list that is present, valid and
/// non-empty (RFC 9213 §2.1, §2.2). Only a shared cache has a target list.
fn targeted_directives(headers: &HeaderMap, cfg: &PolicyConfig) -> Option<ResponseDirectives> {
    if !cfg.shared {
        return None;
    }
    cfg.targeted_fields.iter().find_map(|name| {
        let mut combined = Vec::new();
        for (i, line) in headers.get_all(name).iter().enumerate() {
            if i > 0 {
                combined.extend_from_slice(b", ");
            }
            combined.extend_from_slice(line.as_bytes());
        }
        let dict = sf::parse_dictionary(&combined)?;
        if dict.is_empty() {
            return None;
        }
        Some(interpret_targeted(&dict))
    })
}

/// Maps Structured Field values onto directives (RFC 9213 §2.1). Boolean false means absent;
/// values of the wrong type make numeric directives invalid and restrictive ones unqualified.
fn interpret_targeted(dict: &[(Vec<u8>, sf::Value)]) -> ResponseDirectives {
    use sf::Value;
    let mut r = ResponseDirectives::default();
    let delta = |v: &Value| match v {
        Value::Integer(n) => u64::try_from(*n).ok().map(|n| n.min(DELTA_MAX)),
        _ => None,
    };
    let qualified = |v: &Value| match v {
        Value::String(s) | Value::Token(s) => {
            let names = field_names(s);
            if names.is_empty() { None } else { Some(names) }
        }
        _ => None,
    };
    for (key, value) in dict {
        if *value == Value::Boolean(false) {
            continue;
        }
        match key.as_slice() {
            b"no-store" => r.no_store = true,
            b"public" => r.public = true,
            b"must-revalidate" => r.must_revalidate = true,
            b"proxy-revalidate" => r.proxy_revalidate = true,
            b"must-understand" => r.must_understand = true,
            b"immutable" => r.immutable = true,
            b"no-cache" => r.no_cache = Some(qualified(value).unwrap_or_default()),
            b"private" => r.private = Some(qualified(value).unwrap_or_default()),
            b"max-age" => r.max_age = Some(delta(value).map_or(Delta::Invalid, Delta::Seconds)),
            b"s-maxage" => r.s_maxage = Some(delta(value).map_or(Delta::Invalid, Delta::Seconds)),
            b"stale-while-revalidate" => r.stale_while_revalidate = delta(value),
            b"stale-if-error" => r.stale_if_error = delta(value),
            _ => {}
        }
    }
    r
}

/// A Structured Field Dictionary parser (RFC 9651 §4.2.2), keeping only what cache directives
/// can use. RFC 9213 §2.1 requires it: a Cache-Control parser accepts fields that must be ignored.
mod sf {
    #[derive(Debug, Clone, PartialEq)]
    pub(super) enum Value {
        Boolean(bool),
        Integer(i64),
        String(Vec<u8>),
        Token(Vec<u8>),
        /// Decimal, byte sequence, date, display string or inner list.
        Other,
    }

    struct Parser<'a> {
        s: &'a [u8],
        i: usize,
    }

    impl Parser<'_> {
        fn peek(&self) -> Option<u8> {
            self.s.get(self.i).copied()
        }

        fn bump(&mut self) -> Option<u8> {
            let b = self.peek()?;
            self.i = self.i.saturating_add(1);
            Some(b)
        }

        fn eat(&mut self, b: u8) -> bool {
            if self.peek() == Some(b) {
                self.i = self.i.saturating_add(1);
                true
            } else {
                false
            }
        }

        fn skip_sp(&mut self) {
            while self.eat(b' ') {}
        }

        fn skip_ows(&mut self) {
            while matches!(self.peek(), Some(b' ' | b'\t')) {
                self.i = self.i.saturating_add(1);
            }
        }

        fn done(&self) -> bool {
            self.i >= self.s.len()
        }

        fn key(&mut self) -> Option<Vec<u8>> {
            let first = self.peek()?;
            if !(first.is_ascii_lowercase() || first == b'*') {
                return None;
            }
            let start = self.i;
            while let Some(b) = self.peek() {
                if !(b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.*".contains(&b)) {
                    break;
                }
                self.i = self.i.saturating_add(1);
            }
            self.s.get(start..self.i).map(<[u8]>::to_vec)
        }

        fn parameters(&mut self) -> Option<()> {
            while self.eat(b';') {
                self.skip_sp();
                self.key()?;
                if self.eat(b'=') {
                    self.bare_item()?;
                }
            }
            Some(())
        }

        fn item_or_inner_list(&mut self) -> Option<Value> {
            if self.eat(b'(') {
                loop {
                    self.skip_sp();
                    if self.eat(b')') {
                        self.parameters()?;
                        return Some(Value::Other);
                    }
                    self.bare_item()?;
                    self.parameters()?;
                    if !matches!(self.peek(), Some(b' ' | b')')) {
                        return None;
                    }
                }
            }
            let v = self.bare_item()?;
            self.parameters()?;
            Some(v)
        }

        fn bare_item(&mut self) -> Option<Value> {
            match self.peek()? {
                b'-' | b'0'..=b'9' => self.number(),
                b'"' => self.string(),
                b'*' | b'a'..=b'z' | b'A'..=b'Z' => Some(self.token()),
                b':' => self.byte_sequence(),
                b'?' => {
                    self.bump();
                    match self.bump()? {
                        b'0' => Some(Value::Boolean(false)),
                        b'1' => Some(Value::Boolean(true)),
                        _ => None,
                    }
                }
                b'@' => {
                    self.bump();
                    match self.number()? {
                        Value::Integer(_) => Some(Value::Other),
                        _ => None,
                    }
                }
                b'%' => self.display_string(),
                _ => None,
            }
        }

        fn number(&mut self) -> Option<Value> {
            let negative = self.eat(b'-');
            if !self.peek()?.is_ascii_digit() {
                return None;
            }
            let mut digits: Vec<u8> = Vec::new();
            let mut dot: Option<usize> = None;
            while let Some(b) = self.peek() {
                if b.is_ascii_digit() {
                    digits.push(b);
                } else if b == b'.' && dot.is_none() {
                    if digits.len() > 12 {
                        return None;
                    }
                    dot = Some(digits.len());
                    digits.push(b);
                } else {
                    break;
                }
                self.i = self.i.saturating_add(1);
                if (dot.is_none() && digits.len() > 15) || digits.len() > 16 {
                    return None;
                }
            }
            match dot {
                None => {
                    let mut n: i64 = 0;
                    for d in digits {
                        n = n
                            .saturating_mul(10)
                            .saturating_add(i64::from(d.saturating_sub(b'0')));
                    }
                    Some(Value::Integer(if negative {
                        n.saturating_neg()
                    } else {
                        n
                    }))
                }
                Some(at) => {
                    let fraction = digits.len().saturating_sub(at.saturating_add(1));
                    if fraction == 0 || fraction > 3 {
                        return None;
                    }
                    Some(Value::Other)
                }
            }
        }

        fn string(&mut self) -> Option<Value> {
            self.bump();
            let mut out = Vec::new();
            loop {
                match self.bump()? {
                    b'\\' => match self.bump()? {
                        c @ (b'"' | b'\\') => out.push(c),
                        _ => return None,
                    },
                    b'"' => return Some(Value::String(out)),
                    c @ 0x20..=0x7e => out.push(c),
                    _ => return None,
                }
            }
        }

        fn token(&mut self) -> Value {
            let start = self.i;
            while let Some(b) = self.peek() {
                if !(super::is_tchar(b) || b == b':' || b == b'/') {
                    break;
                }
                self.i = self.i.saturating_add(1);
            }
            Value::Token(self.s.get(start..self.i).unwrap_or_default().to_vec())
        }

        fn byte_sequence(&mut self) -> Option<Value> {
            self.bump();
            loop {
                match self.bump()? {
                    b':' => return Some(Value::Other),
                    b if b.is_ascii_alphanumeric() || b"+/=".contains(&b) => {}
                    _ => return None,
                }
            }
        }

        fn display_string(&mut self) -> Option<Value> {
            self.bump();
            if !self.eat(b'"') {
                return None;
            }
            let mut bytes = Vec::new();
            loop {
                match self.bump()? {
                    b'%' => {
                        let hex = |b: u8| match b {
                            b'0'..=b'9' => Some(b.saturating_sub(b'0')),
                            b'a'..=b'f' => Some(b.saturating_sub(b'a').saturating_add(10)),
                            _ => None,
                        };
                        let hi = hex(self.bump()?)?;
                        let lo = hex(self.bump()?)?;
                        bytes.push(hi.saturating_mul(16).saturating_add(lo));
                    }
                    b'"' => {
                        return std::str::from_utf8(&bytes).ok().map(|_| Value::Other);
                    }
                    c @ 0x20..=0x7e => bytes.push(c),
                    _ => return None,
                }
            }
        }
    }

    /// The dictionary's members in order, a repeated key keeping its last value; None on any
    /// parse error (RFC 9651 §4.2: the whole field fails).
    pub(super) fn parse_dictionary(input: &[u8]) -> Option<Vec<(Vec<u8>, Value)>> {
        let mut end = input.len();
        while end > 0 && input.get(end.saturating_sub(1)) == Some(&b' ') {
            end = end.saturating_sub(1);
        }
        let mut p = Parser {
            s: input.get(..end).unwrap_or_default(),
            i: 0,
        };
        p.skip_sp();
        let mut out: Vec<(Vec<u8>, Value)> = Vec::new();
        while !p.done() {
            let key = p.key()?;
            let value = if p.eat(b'=') {
                p.item_or_inner_list()?
            } else {
                p.parameters()?;
                Value::Boolean(true)
            };
            match out.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => out.push((key, value)),
            }
            p.skip_ows();
            if p.done() {
                break;
            }
            if !p.eat(b',') {
                return None;
            }
            p.skip_ows();
            if p.done() {
                return None;
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn map(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h
    }

    fn resp(cc: &str) -> ResponseDirectives {
        response_directives(
            &map(&[("cache-control", cc.as_bytes())]),
            &PolicyConfig::private(),
        )
    }

    fn req(cc: &str) -> RequestDirectives {
        request_directives(&map(&[("cache-control", cc.as_bytes())]))
    }

    fn names(v: &[&str]) -> Option<Vec<HeaderName>> {
        Some(
            v.iter()
                .map(|n| HeaderName::from_bytes(n.as_bytes()).unwrap())
                .collect(),
        )
    }

    fn cdn(cfg_fields: &[&str], pairs: &[(&str, &[u8])]) -> ResponseDirectives {
        let mut cfg = PolicyConfig::shared();
        cfg.targeted_fields = cfg_fields
            .iter()
            .map(|n| HeaderName::from_bytes(n.as_bytes()).unwrap())
            .collect();
        response_directives(&map(pairs), &cfg)
    }

    #[test]
    fn directive_names_are_case_insensitive() {
        // RFC 9111 §5.2: directives are tokens compared case-insensitively.
        let d = resp("MAX-AGE=60, No-Store, Must-Revalidate");
        assert_eq!(d.max_age, Some(Delta::Seconds(60)));
        assert!(d.no_store && d.must_revalidate);
    }

    #[test]
    fn quoted_argument_with_commas_is_one_directive() {
        // RFC 9111 §5.2.2.4, RFC 9110 §5.6.4: a quoted-string may contain commas.
        let d = resp(r#"no-cache="Set-Cookie, X-A", max-age=5"#);
        assert_eq!(d.no_cache, names(&["set-cookie", "x-a"]));
        assert_eq!(d.max_age, Some(Delta::Seconds(5)));
    }

    #[test]
    fn quoted_string_escapes_are_removed() {
        // RFC 9110 §5.6.4: a backslash escapes the next octet.
        let d = resp(r#"private="x-\a\"b", public"#);
        // `x-a"b` is not a field name, so only the escape handling decides `public` survives.
        assert!(d.public);
        let d = resp(r#"private="x\-a""#);
        assert_eq!(d.private, names(&["x-a"]));
    }

    #[test]
    fn arguments_are_accepted_in_both_forms() {
        // RFC 9111 §5.2: recipients ought to accept both token and quoted-string arguments.
        assert_eq!(resp(r#"max-age="60""#).max_age, Some(Delta::Seconds(60)));
        assert_eq!(resp("no-cache=set-cookie").no_cache, names(&["set-cookie"]));
        assert_eq!(req(r#"max-stale="30""#).max_stale, Some(Some(30)));
    }

    #[test]
    fn all_field_lines_are_combined() {
        // RFC 9110 §5.3: several lines are one comma-separated list.
        let h = map(&[
            ("cache-control", b"public"),
            ("cache-control", b"max-age=7"),
        ]);
        let d = response_directives(&h, &PolicyConfig::private());
        assert!(d.public);
        assert_eq!(d.max_age, Some(Delta::Seconds(7)));
    }

    #[test]
    fn empty_list_members_are_ignored() {
        // RFC 9110 §5.6.1: recipients ignore empty list elements.
        let d = resp(" , ,max-age=5,, ,public,");
        assert_eq!(d.max_age, Some(Delta::Seconds(5)));
        assert!(d.public);
    }

    #[test]
    fn unknown_directives_are_ignored() {
        // RFC 9111 §5.2.3: unrecognised directives are ignored.
        let d = resp(r#"community="UCI", foo, max-age=9"#);
        assert_eq!(d.max_age, Some(Delta::Seconds(9)));
        assert_eq!(
            d,
            ResponseDirectives {
                max_age: Some(Delta::Seconds(9)),
                ..Default::default()
            }
        );
    }

    #[test]
    fn argument_on_argumentless_directive_is_ignored() {
        // RFC 9111 §5.2: no argument is defined for no-store; the directive still applies.
        assert!(resp("no-store=1").no_store);
        assert!(resp(r#"must-revalidate="x""#).must_revalidate);
    }

    #[test]
    fn broken_member_is_dropped_alone() {
        // RFC 9110 §5.6.1 list parsing: one malformed member does not void the field.
        let d = resp("max-age=60 junk, no-store, max-age = 5");
        assert!(d.no_store);
        assert_eq!(d.max_age, None);
        let h = map(&[("cache-control", b"x\xff\xfe, public, \"oops, s-maxage=3")]);
        let d = response_directives(&h, &PolicyConfig::private());
        assert!(d.public);
        assert_eq!(d.s_maxage, None); // swallowed by the unterminated quote
    }

    #[test]
    fn equal_duplicate_delta_is_used() {
        // RFC 9111 §4.2.1: duplicates; equal ones are unambiguous.
        assert_eq!(
            resp("max-age=60, max-age=60").max_age,
            Some(Delta::Seconds(60))
        );
    }

    #[test]
    fn conflicting_duplicate_delta_is_invalid() {
        // RFC 9111 §4.2.1: "or the response should be considered stale".
        assert_eq!(resp("max-age=60, max-age=30").max_age, Some(Delta::Invalid));
        assert_eq!(
            resp("s-maxage=1, s-maxage=x").s_maxage,
            Some(Delta::Invalid)
        );
    }

    #[test]
    fn malformed_delta_seconds_is_invalid() {
        // RFC 9111 §1.2.2: delta-seconds = 1*DIGIT; anything else is invalid.
        for v in [
            "max-age=-1",
            "max-age=abc",
            "max-age=1.5",
            "max-age=",
            "max-age",
            "max-age=+5",
        ] {
            assert_eq!(resp(v).max_age, Some(Delta::Invalid), "{v}");
        }
    }

    #[test]
    fn delta_seconds_saturate_at_two_pow_31() {
        // RFC 9111 §1.2.2: larger values are taken as 2147483648.
        assert_eq!(
            resp("max-age=99999999999999999999999").max_age,
            Some(Delta::Seconds(DELTA_MAX))
        );
        assert_eq!(
            resp("max-age=2147483647").max_age,
            Some(Delta::Seconds(2_147_483_647))
        );
        assert_eq!(parse_delta(b"007"), Some(7));
    }

    #[test]
    fn unqualified_no_cache_overrides_qualified() {
        // RFC 9111 §5.2.2.4: the unqualified form forbids reuse without validation.
        assert_eq!(resp(r#"no-cache="a", no-cache"#).no_cache, Some(vec![]));
        assert_eq!(resp(r#"no-cache, no-cache="a""#).no_cache, Some(vec![]));
        assert_eq!(
            resp(r#"no-cache="a", no-cache="B, a""#).no_cache,
            names(&["a", "b"])
        );
    }

    #[test]
    fn qualified_private_names_are_lower_cased_fields() {
        // RFC 9111 §5.2.2.7: private="field-names".
        assert_eq!(
            resp(r#"private="Set-Cookie, X-User""#).private,
            names(&["set-cookie", "x-user"])
        );
        assert_eq!(resp("private").private, Some(vec![]));
        assert_eq!(resp("public").private, None);
    }

    #[test]
    fn stale_extensions_take_first_valid_value() {
        // RFC 5861 §3, §4: delta-seconds arguments.
        let d = resp("stale-while-revalidate=x, stale-while-revalidate=30, stale-if-error=60");
        assert_eq!(d.stale_while_revalidate, Some(30));
        assert_eq!(d.stale_if_error, Some(60));
    }

    #[test]
    fn request_invalid_arguments_are_ignored() {
        // RFC 9111 §5.2.1.1, §5.2.1.3: invalid delta-seconds carry no preference.
        let r = req("max-age=abc, min-fresh=-3, max-stale=soon");
        assert_eq!((r.max_age, r.min_fresh, r.max_stale), (None, None, None));
        assert_eq!(req("max-age=5, min-fresh=10").max_age, Some(5));
        assert_eq!(req("max-age=5, min-fresh=10").min_fresh, Some(10));
    }

    #[test]
    fn request_max_stale_without_value_accepts_any_staleness() {
        // RFC 9111 §5.2.1.2: no value means a stale response of any age.
        assert_eq!(req("max-stale").max_stale, Some(None));
        assert_eq!(req("max-stale=120").max_stale, Some(Some(120)));
    }

    #[test]
    fn request_boolean_directives_are_read() {
        // RFC 9111 §5.2.1.4, §5.2.1.5, §5.2.1.7; RFC 5861 §4 for stale-if-error.
        let r = req("No-Cache, no-store, only-if-cached, stale-if-error=9");
        assert!(r.no_cache && r.no_store && r.only_if_cached);
        assert_eq!(r.stale_if_error, Some(9));
        assert_eq!(
            req("max-age=0"),
            RequestDirectives {
                max_age: Some(0),
                ..Default::default()
            }
        );
    }

    #[test]
    fn pragma_no_cache_applies_without_cache_control() {
        // RFC 9111 §5.4: Pragma: no-cache counts only when Cache-Control is absent.
        assert!(request_directives(&map(&[("pragma", b"foo, No-Cache")])).no_cache);
        let both = map(&[("pragma", b"no-cache"), ("cache-control", b"max-age=5")]);
        assert!(!request_directives(&both).no_cache);
    }

    #[test]
    fn honour_headers_false_ignores_response_directives() {
        // Configuration (requests-cache cache_control=False): response directives are not read.
        let mut cfg = PolicyConfig::private();
        cfg.honour_headers = false;
        let d = response_directives(&map(&[("cache-control", b"no-store, max-age=5")]), &cfg);
        assert_eq!(d, ResponseDirectives::default());
    }

    #[test]
    fn targeted_field_replaces_cache_control_in_shared_cache() {
        // RFC 9213 §2.2: the first valid targeted field is used and Cache-Control ignored.
        let d = cdn(
            &["cdn-cache-control"],
            &[
                ("cache-control", b"no-store"),
                ("cdn-cache-control", b"max-age=600"),
            ],
        );
        assert!(!d.no_store);
        assert_eq!(d.max_age, Some(Delta::Seconds(600)));
    }

    #[test]
    fn targeted_field_is_unused_by_private_cache() {
        // RFC 9213 §2.2: fields not on a cache's target list must not change its behaviour.
        let mut cfg = PolicyConfig::private();
        cfg.targeted_fields = vec![HeaderName::from_static("cdn-cache-control")];
        let h = map(&[
            ("cache-control", b"no-store"),
            ("cdn-cache-control", b"max-age=600"),
        ]);
        assert!(response_directives(&h, &cfg).no_store);
        assert!(!uses_targeted_field(&h, &cfg));
    }

    #[test]
    fn first_targeted_field_on_target_list_wins() {
        // RFC 9213 §2.2: target list order is priority order.
        let d = cdn(
            &["dynacache-cache-control", "cdn-cache-control"],
            &[
                ("cdn-cache-control", b"max-age=600"),
                ("dynacache-cache-control", b"max-age=5"),
            ],
        );
        assert_eq!(d.max_age, Some(Delta::Seconds(5)));
    }

    #[test]
    fn invalid_targeted_field_falls_back() {
        // RFC 9213 §2.1: a field with a parsing error is ignored as if absent.
        let fields = &["dynacache-cache-control", "cdn-cache-control"];
        for bad in [
            &b"Max-Age=5"[..],
            b"max-age=5,",
            b"max-age=5 x",
            b"max-age=\"5",
            b"max-age=5;",
        ] {
            let d = cdn(
                fields,
                &[
                    ("dynacache-cache-control", bad),
                    ("cdn-cache-control", b"max-age=600"),
                ],
            );
            assert_eq!(
                d.max_age,
                Some(Delta::Seconds(600)),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let d = cdn(
            fields,
            &[
                ("cdn-cache-control", b"max-age = 1"),
                ("cache-control", b"public"),
            ],
        );
        assert!(d.public);
    }

    #[test]
    fn empty_targeted_field_is_ignored() {
        // RFC 9213 §2.1: an empty targeted field is ignored.
        let d = cdn(
            &["cdn-cache-control"],
            &[("cdn-cache-control", b""), ("cache-control", b"public")],
        );
        assert!(d.public);
        // An unknown directive is not empty: Cache-Control is then ignored (RFC 9213 §3.1).
        let d = cdn(
            &["cdn-cache-control"],
            &[
                ("cdn-cache-control", b"none"),
                ("cache-control", b"no-store"),
            ],
        );
        assert!(!d.no_store);
    }

    #[test]
    fn targeted_values_map_from_structured_types() {
        // RFC 9213 §2.1: Boolean for valueless directives, String for field lists, Integer for deltas.
        let d = cdn(
            &["cdn-cache-control"],
            &[(
                "cdn-cache-control",
                br#"private="Set-Cookie", no-store=?0, s-maxage=30, max-age=1.5"#,
            )],
        );
        assert_eq!(d.private, names(&["set-cookie"]));
        assert!(!d.no_store);
        assert_eq!(d.s_maxage, Some(Delta::Seconds(30)));
        assert_eq!(d.max_age, Some(Delta::Invalid));
    }

    #[test]
    fn targeted_parameters_are_ignored_and_last_duplicate_wins() {
        // RFC 9213 §2.1 (parameters ignored); RFC 9651 §4.2.2 (a repeated key overwrites).
        let d = cdn(
            &["cdn-cache-control"],
            &[(
                "cdn-cache-control",
                b"max-age=60;foo=bar, max-age=90, must-revalidate;x",
            )],
        );
        assert_eq!(d.max_age, Some(Delta::Seconds(90)));
        assert!(d.must_revalidate);
    }

    #[test]
    fn split_list_keeps_quoted_commas() {
        // RFC 9110 §5.6.1 and §5.6.4.
        assert_eq!(
            split_list(br#" a , "b,\"c" ,, d"#),
            vec![&b"a"[..], br#""b,\"c""#, b"d"]
        );
    }
}

//! Parser of the `mqueue` module parameter:
//! `name=q;size=100;addmode=1;dbmode=0;maxbytes=1048576`.
//!
//! Like Kamailio's `parse_params`: attributes separated by `;` (one trailing
//! `;` allowed), white space around names and values ignored, values may be
//! quoted with `"` or `'`, names matched without regard to case. Unlike the C
//! module, a number that does not parse is an error, not a silent 0.

/// One queue definition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueSpec {
    pub name: Vec<u8>,
    pub size: i64,
    pub addmode: i64,
    pub dbmode: i64,
    pub maxbytes: i64,
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end]
}

fn unquote(v: &[u8]) -> Result<&[u8], String> {
    match v.first() {
        Some(&q @ (b'"' | b'\'')) => {
            if v.len() >= 2 && v[v.len() - 1] == q {
                Ok(&v[1..v.len() - 1])
            } else {
                Err(format!(
                    "unterminated quote in value {}",
                    String::from_utf8_lossy(v)
                ))
            }
        }
        _ => Ok(v),
    }
}

fn number(attr: &str, v: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| {
            format!(
                "attribute {attr}: not a number: {}",
                String::from_utf8_lossy(v)
            )
        })
}

/// Splits on `;` outside quotes.
fn split_attrs(s: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut quote: Option<u8> = None;
    let mut start = 0;
    for (i, &c) in s.iter().enumerate() {
        match (quote, c) {
            (None, b'"' | b'\'') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, b';') => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// Parses one `mqueue` parameter value.
pub fn parse_queue_spec(input: &[u8]) -> Result<QueueSpec, String> {
    let mut s = trim(input);
    if let Some(rest) = s.strip_suffix(b";") {
        s = rest;
    }
    let mut spec = QueueSpec::default();
    let mut have_name = false;
    for attr in split_attrs(s) {
        let attr = trim(attr);
        if attr.is_empty() {
            return Err("empty attribute".into());
        }
        let (name, value) = match attr.iter().position(|&c| c == b'=') {
            Some(eq) => (trim(&attr[..eq]), unquote(trim(&attr[eq + 1..]))?),
            None => (attr, &b""[..]),
        };
        let lname = String::from_utf8_lossy(name).to_ascii_lowercase();
        match lname.as_str() {
            "name" => {
                spec.name = value.to_vec();
                have_name = true;
            }
            "size" => spec.size = number("size", value)?,
            "addmode" => spec.addmode = number("addmode", value)?,
            "dbmode" => spec.dbmode = number("dbmode", value)?,
            "maxbytes" => spec.maxbytes = number("maxbytes", value)?,
            _ => {
                return Err(format!(
                    "unknown attribute: {}",
                    String::from_utf8_lossy(name)
                ))
            }
        }
    }
    if !have_name || spec.name.is_empty() {
        return Err("queue name not defined".into());
    }
    if !(0..=2).contains(&spec.addmode) {
        return Err(format!("addmode must be 0, 1 or 2, not {}", spec.addmode));
    }
    if !(0..=3).contains(&spec.dbmode) {
        return Err(format!("dbmode must be 0 to 3, not {}", spec.dbmode));
    }
    if spec.size < 0 || spec.maxbytes < 0 {
        return Err("size and maxbytes must not be negative".into());
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_definition() {
        let s = parse_queue_spec(b"name=q1; size = 10;ADDMODE=2;dbmode=1;maxbytes=4096;").unwrap();
        assert_eq!(s.name, b"q1");
        assert_eq!((s.size, s.addmode, s.dbmode, s.maxbytes), (10, 2, 1, 4096));
    }

    #[test]
    fn quoted_name_keeps_semicolon() {
        let s = parse_queue_spec(b"name=\"a;b\";size=1").unwrap();
        assert_eq!(s.name, b"a;b");
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(parse_queue_spec(b"size=10").unwrap_err().contains("name"));
        assert!(parse_queue_spec(b"name=").unwrap_err().contains("name"));
        assert!(parse_queue_spec(b"name=q;colour=red")
            .unwrap_err()
            .contains("colour"));
        assert!(parse_queue_spec(b"name=q;size=ten")
            .unwrap_err()
            .contains("size"));
        assert!(parse_queue_spec(b"name=q;addmode=7")
            .unwrap_err()
            .contains("addmode"));
        assert!(parse_queue_spec(b"name=\"q").is_err());
    }
}

//! Text as Python writes it: `json.dumps` with its defaults (what kombu's
//! JSON serializer calls), the `repr` of a float, and celery's `saferepr`
//! (the `argsrepr` and `kwargsrepr` headers). Celery peers compare none of
//! this byte for byte, but people and tools (flower, logs, the tests'
//! comparisons with a Python worker) read it, so it is written exactly.

use std::io::{self, Write};

use serde::Serialize;
use serde_json::ser::Formatter;
use serde_json::{Number, Value};

/// `json.dumps(value)` with Python's defaults: `", "` and `": "` between
/// items, everything outside printable ASCII escaped (`ensure_ascii`),
/// floats as Python's `repr` writes them. Object keys come in the
/// `serde_json::Map`'s order.
///
/// ```
/// use amqp_io_common::celery::dumps;
/// use serde_json::json;
///
/// assert_eq!(dumps(&json!({"a": [1, 2.0, "\u{e9}"]})), r#"{"a": [1, 2.0, "\u00e9"]}"#);
/// ```
#[must_use]
pub fn dumps<T: Serialize + ?Sized>(value: &T) -> String {
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    // A `Value` written into memory cannot fail (its keys are strings,
    // its numbers finite); other types fall back to serde_json's layout.
    if value.serialize(&mut serializer).is_err() {
        return serde_json::to_string(value).unwrap_or_default();
    }
    // The formatter writes ASCII only.
    String::from_utf8(out).unwrap_or_default()
}

/// `json.dumps` of a string.
pub(crate) fn dumps_str(text: &str) -> String {
    dumps(text)
}

/// `json.dumps`'s layout and escapes for serde_json.
struct PythonFormatter;

impl Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(b": ")
    }

    fn write_f64<W: ?Sized + Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        writer.write_all(float_repr(value).as_bytes())
    }

    fn write_f32<W: ?Sized + Write>(&mut self, writer: &mut W, value: f32) -> io::Result<()> {
        writer.write_all(float_repr(f64::from(value)).as_bytes())
    }

    /// serde_json escapes quotes, backslashes and control characters the
    /// way Python does; the rest of what `ensure_ascii` escapes (DEL and
    /// everything above ASCII, as UTF-16 units) is done here.
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut plain = 0;
        for (at, character) in fragment.char_indices() {
            if (' '..='~').contains(&character) {
                continue;
            }
            writer.write_all(fragment.as_bytes().get(plain..at).unwrap_or_default())?;
            let mut units = [0u16; 2];
            for unit in character.encode_utf16(&mut units) {
                write!(writer, "\\u{unit:04x}")?;
            }
            plain = at + character.len_utf8();
        }
        writer.write_all(fragment.as_bytes().get(plain..).unwrap_or_default())
    }
}

/// Python's `repr` of a float: the shortest digits that read back the
/// same, in positional notation for decimal exponents -5 < e < 16
/// (always with a fractional part), in scientific notation with a signed
/// two-digit exponent otherwise (`1e+16`, `1.5e-05`).
#[must_use]
pub fn float_repr(value: f64) -> String {
    if value.is_nan() {
        return "nan".into();
    }
    if value.is_infinite() {
        return if value > 0.0 { "inf" } else { "-inf" }.into();
    }
    let sign = if value.is_sign_negative() { "-" } else { "" };
    if value == 0.0 {
        return format!("{sign}0.0");
    }
    // Rust's `{:e}` gives the shortest round-trip digits, as Python's
    // repr does; only the layout differs.
    let scientific = format!("{:e}", value.abs());
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    // Where the decimal point falls, counted from the first digit.
    let point = exponent + 1;
    if !(-4 < point && point <= 16) {
        let (first, rest) = digits.split_at(1.min(digits.len()));
        let fraction = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let exponent_sign = if exponent < 0 { '-' } else { '+' };
        return format!(
            "{sign}{first}{fraction}e{exponent_sign}{:02}",
            exponent.unsigned_abs()
        );
    }
    let length = i32::try_from(digits.len()).unwrap_or(i32::MAX);
    if point <= 0 {
        let zeros = "0".repeat(point.unsigned_abs() as usize);
        format!("{sign}0.{zeros}{digits}")
    } else if point >= length {
        let zeros = "0".repeat((point - length) as usize);
        format!("{sign}{digits}{zeros}.0")
    } else {
        let (whole, fraction) = digits.split_at(point as usize);
        format!("{sign}{whole}.{fraction}")
    }
}

/// `str()` of a JSON number as Python prints the int or float it decodes
/// to.
fn number_text(number: &Number) -> String {
    if number.is_f64() {
        number
            .as_f64()
            .map_or_else(|| number.to_string(), float_repr)
    } else {
        number.to_string()
    }
}

/// The longest `argsrepr` and `kwargsrepr` celery writes (its
/// `argsrepr_maxsize` and `kwargsrepr_maxsize`).
pub(crate) const REPR_MAXSIZE: usize = 1024;

/// How deeply celery's `saferepr` shows nested containers
/// (`task_repr_maxlevels`).
pub(crate) const REPR_MAXLEVELS: usize = 3;

/// One piece of a `saferepr`, as celery's `reprstream` yields them.
enum Token<'a> {
    /// Brackets and separators: `direction` +1 opens, -1 closes;
    /// `separator` marks the ones dropped once the length is spent.
    Literal {
        text: &'static str,
        separator: bool,
        direction: i8,
    },
    /// A string, quoted when written.
    Quoted(&'a str),
    /// A number, `None`, `True`, `False`, or an elided container.
    Text(String),
}

fn tokens<'a>(value: &'a Value, level: usize, maxlevels: usize, out: &mut Vec<Token<'a>>) {
    let open = |text| Token::Literal {
        text,
        separator: false,
        direction: 1,
    };
    let close = |text| Token::Literal {
        text,
        separator: false,
        direction: -1,
    };
    let separator = |text| Token::Literal {
        text,
        separator: true,
        direction: 0,
    };
    match value {
        Value::Null => out.push(Token::Text("None".into())),
        Value::Bool(true) => out.push(Token::Text("True".into())),
        Value::Bool(false) => out.push(Token::Text("False".into())),
        Value::Number(number) => out.push(Token::Text(number_text(number))),
        Value::String(text) => out.push(Token::Quoted(text)),
        Value::Array(_) | Value::Object(_) if maxlevels > 0 && level >= maxlevels => {
            let elided = if value.is_array() { "[...]" } else { "{...}" };
            out.push(Token::Text(elided.into()));
        }
        Value::Array(items) => {
            out.push(open("["));
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(separator(", "));
                }
                tokens(item, level + 1, maxlevels, out);
            }
            out.push(close("]"));
        }
        Value::Object(entries) => {
            out.push(open("{"));
            for (index, (key, item)) in entries.iter().enumerate() {
                if index > 0 {
                    out.push(separator(", "));
                }
                out.push(Token::Quoted(key));
                out.push(separator(": "));
                tokens(item, level + 1, maxlevels, out);
            }
            out.push(close("}"));
        }
    }
}

/// celery's `truncate`: cut at `maxlen` characters, back to the last
/// space, and mark it.
fn truncate(text: &str, maxlen: usize) -> String {
    if maxlen == 0 || text.chars().count() < maxlen {
        return text.to_owned();
    }
    let cut: String = text.chars().take(maxlen).collect();
    let kept = cut.rsplit_once(' ').map_or(cut.as_str(), |(kept, _)| kept);
    format!("{kept}...")
}

/// celery's `saferepr(value, maxlen, maxlevels)` of a JSON value, as it
/// reprs the Python objects the JSON decodes to: strings quoted with `'`
/// (only `'` escaped), containers past `maxlevels` shown as `[...]`, the
/// output cut after about `maxlen` characters with `, ...` and its
/// brackets closed.
#[must_use]
pub fn saferepr(value: &Value, maxlen: usize, maxlevels: usize) -> String {
    let mut stream = Vec::new();
    tokens(value, 0, maxlevels, &mut stream);
    let mut left = i64::try_from(maxlen).unwrap_or(i64::MAX);
    let mut out = String::new();
    for (index, token) in stream.iter().enumerate() {
        if left <= 0 {
            if let Token::Literal {
                text, direction, ..
            } = token
            {
                if *direction < 0 {
                    // The cut fell at the container's end: nothing is
                    // left out, so close it; brackets are not counted.
                    out.push_str(text);
                    continue;
                }
            }
            out.push_str(", ...");
            // Close what is still open, skipping containers that start
            // after the cut.
            let mut depth = 0i64;
            for rest in stream.get(index..).unwrap_or_default() {
                if let Token::Literal {
                    text,
                    separator: false,
                    direction,
                } = rest
                {
                    depth += i64::from(*direction);
                    if depth < 0 {
                        depth = 0;
                        out.push_str(text);
                    }
                }
            }
            break;
        }
        let room = usize::try_from(left).unwrap_or(usize::MAX);
        let piece = match token {
            Token::Literal { text, .. } => (*text).to_owned(),
            Token::Quoted(text) => format!("'{}'", truncate(text, room).replace('\'', "\\'")),
            Token::Text(text) => truncate(text, room),
        };
        left -= i64::try_from(piece.chars().count()).unwrap_or(i64::MAX);
        out.push_str(&piece);
    }
    out
}

/// The `argsrepr` / `kwargsrepr` celery writes for `value`.
pub(crate) fn argsrepr(value: &Value) -> String {
    saferepr(value, REPR_MAXSIZE, REPR_MAXLEVELS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn floats_read_as_python_writes_them() {
        for (value, text) in [
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (1e-5, "1e-05"),
            (1.5e-5, "1.5e-05"),
            (0.0001, "0.0001"),
            (0.1, "0.1"),
            (-0.0, "-0.0"),
            (3.5, "3.5"),
            (1.0, "1.0"),
            (123_456_789.123, "123456789.123"),
            (1.234e300, "1.234e+300"),
            (-2.5e-300, "-2.5e-300"),
            (f64::MAX, "1.7976931348623157e+308"),
        ] {
            assert_eq!(float_repr(value), text, "{value:e}");
        }
    }

    #[test]
    fn json_is_laid_out_and_escaped_as_python_does() {
        let value = json!([[1, "two", 3.5, null, true], {"k": [1, 2], "s": "caf\u{e9}"}, {}]);
        assert_eq!(
            dumps(&value),
            r#"[[1, "two", 3.5, null, true], {"k": [1, 2], "s": "caf\u00e9"}, {}]"#
        );
        assert_eq!(
            dumps(&json!("a\"\\\n\t\u{1}\u{7f}\u{1F600}")),
            r#""a\"\\\n\t\u0001\u007f\ud83d\ude00""#
        );
        assert_eq!(dumps(&json!([1e16, 0.5, -3])), "[1e+16, 0.5, -3]");
    }

    /// What celery 5.7's `saferepr(value, 1024, maxlevels=3)` printed for
    /// each value.
    #[test]
    fn saferepr_matches_celery() {
        let long = "x".repeat(2000);
        let words = "word ".repeat(300);
        let numbers: Vec<u32> = (0..600).collect();
        let cases = [
            (json!([2, 3]), "[2, 3]".to_owned()),
            (json!([]), "[]".to_owned()),
            (json!({}), "{}".to_owned()),
            (
                json!([1, "two", 3.5, null, true]),
                "[1, 'two', 3.5, None, True]".to_owned(),
            ),
            (
                json!({"k": [1, 2], "s": "caf\u{e9}"}),
                "{'k': [1, 2], 's': 'caf\u{e9}'}".to_owned(),
            ),
            (
                json!(["it's", "say \"hi\"", "a\nb\\c"]),
                "['it\\'s', 'say \"hi\"', 'a\nb\\c']".to_owned(),
            ),
            (json!([[[[1]]]]), "[[[[...]]]]".to_owned()),
            (
                json!({"a": {"b": {"c": {"d": 1}}}}),
                "{'a': {'b': {'c': {...}}}}".to_owned(),
            ),
            (json!([[1, [2, [3, [4]]]]]), "[[1, [2, [...]]]]".to_owned()),
            (json!([long]), format!("['{}...']", "x".repeat(1023))),
            (
                json!([1e16, 1e-5, 0.1, -0.0, 123_456_789.123]),
                "[1e+16, 1e-05, 0.1, -0.0, 123456789.123]".to_owned(),
            ),
            (
                json!([{"a": [1, {"b": 2}]}]),
                "[{'a': [1, {...}]}]".to_owned(),
            ),
            (json!([[], {}]), "[[], {}]".to_owned()),
            (json!([1.0, 2.5]), "[1.0, 2.5]".to_owned()),
        ];
        for (value, expected) in cases {
            assert_eq!(argsrepr(&value), expected);
        }
        let listed: Vec<String> = (0..=226).map(|n| n.to_string()).collect();
        let expected = format!("[{}..., ...]", listed.join(", "));
        assert_eq!(argsrepr(&json!(numbers)), expected);
        let expected = format!("{{'long': '{}...'}}", "word ".repeat(203).trim_end());
        assert_eq!(argsrepr(&json!({ "long": words })), expected);
    }
}

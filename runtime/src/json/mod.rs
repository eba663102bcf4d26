//! Payloads as JSON: encoding that refuses what would not read back, and the nesting limit.
//!
//! Everything the engine stores (state, inputs, outputs) is JSON written by `serde_json`. Two
//! things can go wrong on the way in:
//!
//! - A value that `serde_json` writes but that does not read back as itself: a float that is NaN
//!   or infinite is written as `null`, a custom `Serialize` may not match its `Deserialize`.
//!   Stored as is, it would fail every later read, or read back as something else
//!   (`Some(f64::NAN)` as `None`). [`encode`] therefore decodes what it wrote and compares the
//!   result with the value, by a fingerprint of what serde sees of each.
//! - A value nested so deeply that code walking it recursively overflows the stack. Text parsed
//!   by `serde_json` is safe: its parser refuses more than [`MAX_NESTING_DEPTH`] levels, without
//!   recursing past them, so every stored payload is decoded under that limit. A
//!   [`serde_json::Value`] handed in by a caller of the by-name client has no such limit, and
//!   decoding, cloning or even dropping it recurses once per level: [`check_depth`] measures it
//!   with an explicit stack first and takes a refused value apart without recursion.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// The most arrays and objects a payload may nest in one another: `[[1]]` nests 2. Deeper
/// payloads are refused with [`Error::Validation`](crate::Error::Validation). It is the limit
/// of `serde_json`'s own parser, so whatever is accepted can also be read back.
pub const MAX_NESTING_DEPTH: usize = 127;

mod fingerprint;

/// Encodes `value` and checks that the JSON reads back as the same value: decoded into `T`, it
/// has the same [fingerprint](fingerprint) as `value` (every call of the serde data model, the
/// exact bits of each float, whether an option is `Some`; the order of map entries aside). The
/// message says why a value is refused.
pub(crate) fn encode<T: Serialize + DeserializeOwned>(value: &T) -> Result<String, String> {
    let json = serde_json::to_string(value).map_err(|e| e.to_string())?;
    let back: T = serde_json::from_str(&json)
        .map_err(|e| format!("its JSON {} does not read back ({e}){HINT}", excerpt(&json)))?;
    if fingerprint::of(value) != fingerprint::of(&back) {
        return Err(format!(
            "its JSON {} reads back as another value{HINT}",
            excerpt(&json)
        ));
    }
    Ok(json)
}

const HINT: &str = " (a float that is NaN or infinite, for one, is written as null)";

/// The start of a JSON text, for messages.
fn excerpt(json: &str) -> String {
    const MAX: usize = 120;
    match json.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}...", json.get(..end).unwrap_or_default()),
        None => json.to_owned(),
    }
}

/// Checks that `value` nests at most [`MAX_NESTING_DEPTH`] levels, without recursion. A value
/// that nests deeper is taken apart (also without recursion: dropping it whole would recurse
/// once per level) and the message says how deep it went.
pub(crate) fn check_depth(value: Value) -> Result<Value, String> {
    let mut too_deep = false;
    // Values to look at, each with the level it has if it is an array or an object.
    let mut stack: Vec<(&Value, usize)> = vec![(&value, 1)];
    while let Some((v, level)) = stack.pop() {
        if matches!(v, Value::Array(_) | Value::Object(_)) && level > MAX_NESTING_DEPTH {
            too_deep = true;
            break;
        }
        match v {
            Value::Array(items) => stack.extend(items.iter().map(|c| (c, level + 1))),
            Value::Object(map) => stack.extend(map.values().map(|c| (c, level + 1))),
            _ => {}
        }
    }
    if !too_deep {
        return Ok(value);
    }
    dismantle(value);
    Err(format!(
        "nests arrays and objects more than {MAX_NESTING_DEPTH} levels deep"
    ))
}

/// Drops `value` level by level, so that no drop recurses.
fn dismantle(value: Value) {
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.into_iter().map(|(_, child)| child)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    fn nested(levels: usize) -> Value {
        let mut v = Value::Null;
        for _ in 0..levels {
            v = Value::Array(vec![v]);
        }
        v
    }

    #[test]
    fn values_that_read_back_as_themselves_are_encoded() {
        assert_eq!(
            encode(&vec![1.5f64, -0.0, 1e300]).unwrap(),
            "[1.5,-0.0,1e+300]"
        );
        let map: BTreeMap<u32, String> = [(1, "a".to_owned())].into();
        assert_eq!(encode(&map).unwrap(), r#"{"1":"a"}"#);
    }

    #[test]
    fn values_that_do_not_read_back_are_refused() {
        // Written as null, which an f64 cannot read.
        let err = encode(&f64::NAN).unwrap_err();
        assert!(err.contains("does not read back"), "{err}");
        assert!(encode(&vec![1.0, f64::INFINITY]).is_err());
        // Written as null, which reads back as another value.
        let err = encode(&Some(f64::NEG_INFINITY)).unwrap_err();
        assert!(err.contains("reads back as another value"), "{err}");
        // Any value JSON cannot tell apart from another, not only floats.
        assert!(encode(&Some(())).is_err());

        // A Serialize that does not match its Deserialize.
        #[derive(Serialize, Deserialize)]
        struct Lossy {
            #[serde(skip_serializing_if = "Option::is_none", default = "seven")]
            n: Option<u32>,
        }
        fn seven() -> Option<u32> {
            Some(7)
        }
        assert!(encode(&Lossy { n: None }).is_err());
        assert!(encode(&Lossy { n: Some(1) }).is_ok());
    }

    #[test]
    fn nesting_is_limited_to_what_the_parser_reads_back() {
        let deepest = nested(MAX_NESTING_DEPTH);
        let text = deepest.to_string();
        assert!(serde_json::from_str::<Value>(&text).is_ok());
        assert!(check_depth(deepest).is_ok());

        let too_deep = nested(MAX_NESTING_DEPTH + 1);
        assert!(serde_json::from_str::<Value>(&too_deep.to_string()).is_err());
        let err = check_depth(too_deep).unwrap_err();
        assert!(err.contains("127 levels"), "{err}");

        let mut object = serde_json::Map::new();
        object.insert("deep".into(), nested(MAX_NESTING_DEPTH));
        assert!(check_depth(Value::Object(object)).is_err());
    }

    #[test]
    fn a_value_too_deep_to_drop_recursively_is_refused_on_a_small_stack() {
        // Built, checked and refused on a 256 KiB stack: a recursive walk or drop of a
        // million levels would need far more.
        let outcome = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| check_depth(nested(1_000_000)).is_err())
            .unwrap()
            .join()
            .unwrap();
        assert!(outcome);
    }
}

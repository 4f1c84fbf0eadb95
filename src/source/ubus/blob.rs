//! The blob / blobmsg encoding that ubus messages are made of, to and from `serde_json::Value`.
//!
//! Every attribute starts with a big-endian u32: bit 31 marks a blobmsg ("extended") attribute,
//! bits 30..24 hold the attribute id (for blobmsg: its type) and bits 23..0 the length including
//! these 4 bytes. Attributes are zero-padded to 4 bytes. A blobmsg attribute continues with a
//! big-endian u16 name length, the name, a NUL and padding to 4, then its payload. Containers
//! (the message root, tables, arrays) are attributes whose payload is a run of attributes.
//!
//! Every length read from the wire is checked against the bytes actually present, so a
//! malformed message is an error, never a panic or an out-of-bounds read.

use super::{HEADER_LEN, MAX_MESSAGE_LEN};
use crate::error::{Error, Result};
use serde_json::{Map, Number, Value};
use std::borrow::Cow;

const TAG_LEN: usize = 4;
const EXTENDED: u32 = 1 << 31;
const ID_SHIFT: u32 = 24;
const ID_MASK: u32 = 0x7f;
pub(super) const LEN_MASK: u32 = 0x00ff_ffff;

/// Real replies nest a handful of levels; refusing deeper ones keeps a hostile or broken
/// reply from exhausting the stack of the recursive decoder.
const MAX_DEPTH: usize = 32;

const TYPE_UNSPEC: u8 = 0;
const TYPE_ARRAY: u8 = 1;
const TYPE_TABLE: u8 = 2;
const TYPE_STRING: u8 = 3;
const TYPE_INT64: u8 = 4;
const TYPE_INT32: u8 = 5;
const TYPE_INT16: u8 = 6;
/// INT8 doubles as BOOL: libubox has one type code for both and prints it as true/false.
const TYPE_BOOL: u8 = 7;
const TYPE_DOUBLE: u8 = 8;

fn padded(len: usize) -> usize {
    (len + 3) & !3
}

/// The error for anything on the wire that does not follow the format.
pub(super) fn malformed(what: impl std::fmt::Display) -> Error {
    Error::Ubus(format!("malformed ubus message: {what}"))
}

/// Builds a message (header included) in one buffer that never grows past the message size
/// limit, so an oversized request is refused before it is allocated.
pub(super) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub(super) fn new() -> Self {
        Writer { buf: Vec::new() }
    }

    /// Appends bytes that are not an attribute (the message header).
    pub(super) fn raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.reserve(bytes.len())?;
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// A plain (non-blobmsg) attribute holding a big-endian u32.
    pub(super) fn put_u32(&mut self, id: u8, value: u32) -> Result<()> {
        let start = self.open()?;
        self.raw(&value.to_be_bytes())?;
        self.close(start, id, false)
    }

    /// A plain (non-blobmsg) attribute holding a NUL-terminated string.
    pub(super) fn put_str(&mut self, id: u8, value: &str) -> Result<()> {
        let start = self.open()?;
        self.c_string(value)?;
        self.close(start, id, false)
    }

    /// A plain attribute whose payload is whatever `fill` writes (the root, DATA).
    pub(super) fn nested(
        &mut self,
        id: u8,
        fill: impl FnOnce(&mut Self) -> Result<()>,
    ) -> Result<()> {
        let start = self.open()?;
        fill(self)?;
        self.close(start, id, false)
    }

    /// The members of a JSON object as blobmsg attributes, in the object's order.
    pub(super) fn put_members(&mut self, members: &Map<String, Value>) -> Result<()> {
        self.members(members, 0)
    }

    pub(super) fn finish(self) -> Vec<u8> {
        self.buf
    }

    fn members(&mut self, members: &Map<String, Value>, depth: usize) -> Result<()> {
        for (name, value) in members {
            self.blobmsg(name, value, depth)?;
        }
        Ok(())
    }

    fn blobmsg(&mut self, name: &str, value: &Value, depth: usize) -> Result<()> {
        if depth >= MAX_DEPTH {
            return Err(Error::Ubus(format!(
                "ubus arguments nest deeper than {MAX_DEPTH} levels"
            )));
        }
        let name_len = u16::try_from(name.len()).map_err(|_| {
            Error::Ubus(format!(
                "ubus argument name of {} bytes is longer than 65535",
                name.len()
            ))
        })?;
        let start = self.open()?;
        self.raw(&name_len.to_be_bytes())?;
        self.c_string(name)?;
        self.pad()?;
        let kind = match value {
            Value::Null => TYPE_UNSPEC,
            Value::Bool(b) => {
                self.raw(&[u8::from(*b)])?;
                TYPE_BOOL
            }
            Value::Number(n) => self.number(n)?,
            Value::String(s) => {
                self.c_string(s)?;
                TYPE_STRING
            }
            Value::Array(items) => {
                for item in items {
                    self.blobmsg("", item, depth + 1)?;
                }
                TYPE_ARRAY
            }
            Value::Object(members) => {
                self.members(members, depth + 1)?;
                TYPE_TABLE
            }
        };
        self.close(start, kind, true)
    }

    /// Integers that fit in 32 bits become INT32 and others INT64, like libubox's JSON
    /// converter; everything else is a DOUBLE.
    fn number(&mut self, n: &Number) -> Result<u8> {
        if let Some(i) = n.as_i64() {
            return Ok(match i32::try_from(i) {
                Ok(small) => {
                    self.raw(&small.to_be_bytes())?;
                    TYPE_INT32
                }
                Err(_) => {
                    self.raw(&i.to_be_bytes())?;
                    TYPE_INT64
                }
            });
        }
        if n.is_u64() {
            return Err(Error::Ubus(format!(
                "ubus argument {n} does not fit in a signed 64-bit integer"
            )));
        }
        let f = n
            .as_f64()
            .ok_or_else(|| Error::Ubus(format!("ubus argument {n} is not a number")))?;
        self.raw(&f.to_bits().to_be_bytes())?;
        Ok(TYPE_DOUBLE)
    }

    fn c_string(&mut self, s: &str) -> Result<()> {
        if s.contains('\0') {
            return Err(Error::Ubus(format!(
                "ubus strings cannot contain NUL bytes: {s:?}"
            )));
        }
        self.raw(s.as_bytes())?;
        self.raw(&[0])
    }

    fn pad(&mut self) -> Result<()> {
        let zeros = padded(self.buf.len()) - self.buf.len();
        self.raw(&[0; 3][..zeros])
    }

    /// Starts an attribute: a placeholder header that `close` fills in.
    fn open(&mut self) -> Result<usize> {
        let start = self.buf.len();
        self.raw(&[0; TAG_LEN])?;
        Ok(start)
    }

    fn close(&mut self, start: usize, id: u8, extended: bool) -> Result<()> {
        let len = self.buf.len() - start;
        let len = u32::try_from(len)
            .ok()
            .filter(|len| *len <= LEN_MASK)
            .ok_or_else(|| Error::Ubus(format!("ubus attribute of {len} bytes is too long")))?;
        let mut tag = (u32::from(id) & ID_MASK) << ID_SHIFT | len;
        if extended {
            tag |= EXTENDED;
        }
        self.buf[start..start + TAG_LEN].copy_from_slice(&tag.to_be_bytes());
        self.pad()
    }

    fn reserve(&mut self, more: usize) -> Result<()> {
        if self.buf.len() + more > HEADER_LEN + MAX_MESSAGE_LEN {
            return Err(Error::Ubus(format!(
                "ubus request exceeds the {MAX_MESSAGE_LEN} byte message limit"
            )));
        }
        Ok(())
    }
}

/// One attribute as found on the wire; `payload` excludes the header and the padding.
#[derive(Debug, Clone, Copy)]
pub(super) struct Attr<'a> {
    pub(super) id: u8,
    pub(super) extended: bool,
    pub(super) payload: &'a [u8],
}

impl<'a> Attr<'a> {
    /// The payload of a plain u32 attribute (STATUS, OBJID).
    pub(super) fn u32(&self) -> Result<u32> {
        let bytes: [u8; 4] = self.payload.try_into().map_err(|_| {
            malformed(format!(
                "attribute {} should hold 4 bytes, has {}",
                self.id,
                self.payload.len()
            ))
        })?;
        Ok(u32::from_be_bytes(bytes))
    }

    /// The name and payload of a blobmsg attribute.
    fn blobmsg(&self) -> Result<(Cow<'a, str>, &'a [u8])> {
        if !self.extended {
            return Err(malformed(format!(
                "attribute of type {} inside a table or array has no name header",
                self.id
            )));
        }
        let Some((len_bytes, rest)) = self.payload.split_first_chunk::<2>() else {
            return Err(malformed("blobmsg attribute too short for its name length"));
        };
        let name_len = usize::from(u16::from_be_bytes(*len_bytes));
        let header_len = padded(2 + name_len + 1);
        if header_len > self.payload.len() {
            return Err(malformed(format!(
                "blobmsg name of {name_len} bytes does not fit in its {} byte attribute",
                self.payload.len()
            )));
        }
        if rest[name_len] != 0 {
            return Err(malformed("blobmsg name is not NUL-terminated"));
        }
        let name = String::from_utf8_lossy(&rest[..name_len]);
        Ok((name, &self.payload[header_len..]))
    }
}

/// Walks a run of attributes (a container's payload); yields one error and stops at the first
/// attribute whose length does not fit.
pub(super) struct Attrs<'a> {
    rest: &'a [u8],
}

impl<'a> Attrs<'a> {
    pub(super) fn new(data: &'a [u8]) -> Self {
        Attrs { rest: data }
    }

    fn split(&self) -> Result<(Attr<'a>, &'a [u8])> {
        let Some(tag) = self.rest.first_chunk::<TAG_LEN>() else {
            return Err(malformed(format!(
                "{} stray bytes where an attribute header was expected",
                self.rest.len()
            )));
        };
        let tag = u32::from_be_bytes(*tag);
        let len = (tag & LEN_MASK) as usize;
        if len < TAG_LEN {
            return Err(malformed(format!(
                "attribute length {len} is shorter than its header"
            )));
        }
        if len > self.rest.len() {
            return Err(malformed(format!(
                "attribute length {len} exceeds the {} bytes left in its container",
                self.rest.len()
            )));
        }
        let attr = Attr {
            id: ((tag >> ID_SHIFT) & ID_MASK) as u8,
            extended: tag & EXTENDED != 0,
            payload: &self.rest[TAG_LEN..len],
        };
        // The last attribute of a container may end without its padding.
        let next = self.rest.get(padded(len)..).unwrap_or_default();
        Ok((attr, next))
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<Attr<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match self.split() {
            Ok((attr, next)) => {
                self.rest = next;
                Some(Ok(attr))
            }
            Err(error) => {
                self.rest = &[];
                Some(Err(error))
            }
        }
    }
}

/// Decodes a run of blobmsg attributes (a DATA payload) into a JSON object. Strings that are
/// not valid UTF-8 (an SSID, say) are kept with replacement characters rather than failing the
/// whole reply.
pub(super) fn decode_table(data: &[u8]) -> Result<Map<String, Value>> {
    table(data, 0)
}

/// The string payload of a plain attribute (OBJPATH) or a blobmsg STRING.
pub(super) fn c_string(payload: &[u8]) -> Result<String> {
    let end = payload
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| malformed("string is not NUL-terminated"))?;
    Ok(String::from_utf8_lossy(&payload[..end]).into_owned())
}

fn table(data: &[u8], depth: usize) -> Result<Map<String, Value>> {
    let mut members = Map::new();
    for attr in Attrs::new(data) {
        let attr = attr?;
        let (name, payload) = attr.blobmsg()?;
        let value = value(attr.id, payload, depth)?;
        members.insert(name.into_owned(), value);
    }
    Ok(members)
}

fn array(data: &[u8], depth: usize) -> Result<Vec<Value>> {
    let mut items = Vec::new();
    for attr in Attrs::new(data) {
        let attr = attr?;
        let (_, payload) = attr.blobmsg()?;
        items.push(value(attr.id, payload, depth)?);
    }
    Ok(items)
}

fn value(kind: u8, payload: &[u8], depth: usize) -> Result<Value> {
    if depth >= MAX_DEPTH {
        return Err(malformed(format!(
            "tables and arrays nest deeper than {MAX_DEPTH} levels"
        )));
    }
    Ok(match kind {
        TYPE_UNSPEC => Value::Null,
        TYPE_ARRAY => Value::Array(array(payload, depth + 1)?),
        TYPE_TABLE => Value::Object(table(payload, depth + 1)?),
        TYPE_STRING => Value::String(c_string(payload)?),
        TYPE_INT64 => Value::from(i64::from_be_bytes(exact(kind, payload)?)),
        TYPE_INT32 => Value::from(i32::from_be_bytes(exact(kind, payload)?)),
        TYPE_INT16 => Value::from(i16::from_be_bytes(exact(kind, payload)?)),
        TYPE_BOOL => Value::Bool(exact::<1>(kind, payload)?[0] != 0),
        TYPE_DOUBLE => {
            let bits = u64::from_be_bytes(exact(kind, payload)?);
            // NaN and infinities have no JSON form; libubox would print invalid JSON.
            Number::from_f64(f64::from_bits(bits)).map_or(Value::Null, Value::Number)
        }
        other => return Err(malformed(format!("unknown blobmsg type {other}"))),
    })
}

fn exact<const N: usize>(kind: u8, payload: &[u8]) -> Result<[u8; N]> {
    payload.try_into().map_err(|_| {
        malformed(format!(
            "blobmsg type {kind} should hold {N} bytes, has {}",
            payload.len()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::ubus::tests::{all_types_json, hex_fixture};
    use serde_json::json;

    fn encode(value: &Value) -> Result<Vec<u8>> {
        let mut writer = Writer::new();
        writer.put_members(value.as_object().unwrap())?;
        Ok(writer.finish())
    }

    fn round_trip(value: &Value) -> Value {
        Value::Object(decode_table(&encode(value).unwrap()).unwrap())
    }

    /// The DATA payload of the captured `uci get` reply (message 6 after its header, root
    /// attribute, OBJID attribute and DATA attribute header).
    fn captured_uci_data() -> Vec<u8> {
        let message = hex_fixture("invoke-reply.hex");
        message[24..956].to_vec()
    }

    #[test]
    fn every_blobmsg_type_decodes_to_its_json_value() {
        let decoded = decode_table(&hex_fixture("all-types.hex")).unwrap();
        assert_eq!(Value::Object(decoded), all_types_json());
    }

    #[test]
    fn captured_reply_decodes() {
        let decoded = Value::Object(decode_table(&captured_uci_data()).unwrap());
        assert_eq!(decoded["values"]["cfg0492bd"][".anonymous"], json!(true));
        assert_eq!(
            decoded["values"]["wan1"]["track_ip"],
            json!(["1.1.1.1", "8.8.8.8"])
        );
    }

    #[test]
    fn arguments_encode_like_the_ubus_cli() {
        let request = hex_fixture("invoke-request.hex");
        let encoded = encode(&json!({"config": "connmark-lb"})).unwrap();
        // The blobmsg table inside the captured INVOKE's DATA attribute.
        assert_eq!(encoded, request[32..]);
    }

    #[test]
    fn encoding_and_decoding_are_inverse() {
        let value = json!({
            "": "empty name", "a\"b": "x", "n": {"m": [[], {}, [1, -1, 2147483647, -2147483648]]},
            "big": 9_007_199_254_740_993_i64, "neg": -9_007_199_254_740_993_i64,
            "frac": -0.5, "long": "w".repeat(70_000)
        });
        assert_eq!(round_trip(&value), value);
        assert_eq!(round_trip(&all_types_json()), all_types_json());
    }

    #[test]
    fn integers_use_the_narrowest_of_int32_and_int64() {
        let type_of = |n: Value| encode(&json!({ "n": n })).unwrap()[0];
        assert_eq!(type_of(json!(2_147_483_647)), 0x85);
        assert_eq!(type_of(json!(-2_147_483_648_i64)), 0x85);
        assert_eq!(type_of(json!(2_147_483_648_i64)), 0x84);
        assert_eq!(type_of(json!(true)), 0x87);
        assert_eq!(type_of(json!(0.5)), 0x88);
        let error = encode(&json!({ "n": u64::MAX })).unwrap_err();
        assert_eq!(
            error.to_string(),
            "ubus argument 18446744073709551615 does not fit in a signed 64-bit integer"
        );
    }

    #[test]
    fn strings_with_nul_cannot_be_sent() {
        let error = encode(&json!({"s": "a\u{0}b"})).unwrap_err();
        assert_eq!(
            error.to_string(),
            "ubus strings cannot contain NUL bytes: \"a\\0b\""
        );
    }

    fn nested(depth: usize) -> Value {
        (0..depth).fold(json!("leaf"), |inner, _| json!([inner]))
    }

    #[test]
    fn nesting_is_bounded_both_ways() {
        let deepest = json!({ "n": nested(MAX_DEPTH - 1) });
        assert_eq!(round_trip(&deepest), deepest);
        let too_deep = json!({ "n": nested(MAX_DEPTH) });
        assert_eq!(
            encode(&too_deep).unwrap_err().to_string(),
            "ubus arguments nest deeper than 32 levels"
        );
        // The same nesting arriving from the wire, built by hand.
        let mut attr = vec![0x83, 0, 0, 0x0a, 0, 0, 0, 0, b'x', 0];
        for _ in 0..MAX_DEPTH {
            attr.resize(attr.len().next_multiple_of(4), 0);
            let len = (attr.len() + 8) as u32;
            let mut outer = (0x8100_0000 | len).to_be_bytes().to_vec();
            outer.extend([0, 0, 0, 0]);
            outer.extend(attr);
            attr = outer;
        }
        assert_eq!(
            decode_table(&attr).unwrap_err().to_string(),
            "malformed ubus message: tables and arrays nest deeper than 32 levels"
        );
    }

    #[test]
    fn every_truncation_of_a_real_reply_is_an_error() {
        let data = captured_uci_data();
        for len in 1..data.len() {
            assert!(decode_table(&data[..len]).is_err(), "cut at {len} accepted");
        }
    }

    #[test]
    fn corrupting_any_byte_of_a_real_reply_never_panics() {
        let data = captured_uci_data();
        let mut errors = 0;
        for position in 0..data.len() {
            for byte in [0x00, 0x01, 0x0f, 0x7f, 0x80, 0xff] {
                let mut corrupt = data.clone();
                corrupt[position] = byte;
                errors += usize::from(decode_table(&corrupt).is_err());
            }
        }
        // Header and length bytes matter; most payload bytes just change a value.
        assert!(errors > 500, "only {errors} corruptions detected");
    }

    #[test]
    fn malformed_attributes_are_named() {
        let cases: [(&[u8], &str); 6] = [
            (
                &[0x83, 0, 0],
                "3 stray bytes where an attribute header was expected",
            ),
            (
                &[0x83, 0, 0, 2],
                "attribute length 2 is shorter than its header",
            ),
            (
                &[0x03, 0, 0, 8, b'a', 0, 0, 0],
                "attribute of type 3 inside a table or array has no name header",
            ),
            (
                &[0x83, 0, 0, 8, 0, 9, b'a', 0],
                "blobmsg name of 9 bytes does not fit in its 4 byte attribute",
            ),
            (
                &[0x83, 0, 0, 9, 0, 0, 0, 0, b'a'],
                "string is not NUL-terminated",
            ),
            (
                &[0x85, 0, 0, 10, 0, 0, 0, 0, 1, 2],
                "blobmsg type 5 should hold 4 bytes, has 2",
            ),
        ];
        for (bytes, message) in cases {
            assert_eq!(
                decode_table(bytes).unwrap_err().to_string(),
                format!("malformed ubus message: {message}")
            );
        }
    }

    #[test]
    fn invalid_utf8_and_non_finite_doubles_still_decode() {
        let latin1 = [0x83, 0, 0, 0x0b, 0, 1, b's', 0, b'\xe9', b't', 0];
        assert_eq!(
            Value::Object(decode_table(&latin1).unwrap()),
            json!({"s": "\u{fffd}t"})
        );
        let mut nan = vec![0x88, 0, 0, 0x10, 0, 1, b'd', 0];
        nan.extend(f64::NAN.to_bits().to_be_bytes());
        assert_eq!(
            Value::Object(decode_table(&nan).unwrap()),
            json!({"d": null})
        );
    }
}

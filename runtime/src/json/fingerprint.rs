//! A fingerprint of a value as serde sees it, to tell whether two values are the same without
//! requiring `PartialEq`.
//!
//! The value is serialised into a hasher instead of a text: every call of the serde data model
//! (its kind, the exact bits of a float, whether an option is `None` or `Some`, names of
//! variants) goes into the hash, so values that JSON would write alike (`Some(NaN)` and `None`
//! are both `null`) get different fingerprints. Map entries are hashed one by one and summed,
//! so the order a `HashMap` happens to iterate in does not matter.
//!
//! It runs twice for every state stored (a debounce `add` stores its whole batch), so the hash
//! is a multiply-and-rotate one (as in rustc's `FxHasher`), a few instructions per value, not
//! SipHash: the values compared are the application's own, not an adversary's, and a collision
//! would only let through a value that does not read back.

use std::hash::Hasher;

use serde::ser::{self, Serialize};

/// The fingerprint of `value`, or `None` if it cannot be serialised.
pub(crate) fn of<T: Serialize + ?Sized>(value: &T) -> Option<u64> {
    let mut hashing = Hashing::default();
    value.serialize(&mut hashing).ok()?;
    Some(hashing.0.finish())
}

/// The hash being built.
#[derive(Default)]
struct Hashing(Fx);

/// A 64-bit multiply-and-rotate hash.
#[derive(Default)]
struct Fx(u64);

impl Fx {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::SEED);
    }
}

impl Hasher for Fx {
    fn finish(&self) -> u64 {
        // A final mix, so that the map sums below add well-spread values.
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            if let Some(head) = word.get_mut(..rest.len()) {
                head.copy_from_slice(rest);
            }
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 56));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
}

impl Hashing {
    fn tag(&mut self, tag: u8) {
        self.0.write_u8(tag);
    }

    fn str(&mut self, s: &str) {
        self.0.write_usize(s.len());
        self.0.write(s.as_bytes());
    }
}

/// Why a value could not be fingerprinted: only a `Serialize` impl that fails.
#[derive(Debug)]
struct Failed(String);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failed {}

impl ser::Error for Failed {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Failed(msg.to_string())
    }
}

/// The kinds of the serde data model, each with its own tag.
mod tag {
    pub(super) const BOOL: u8 = 1;
    pub(super) const I64: u8 = 2;
    pub(super) const I128: u8 = 3;
    pub(super) const U64: u8 = 4;
    pub(super) const U128: u8 = 5;
    pub(super) const F32: u8 = 6;
    pub(super) const F64: u8 = 7;
    pub(super) const CHAR: u8 = 8;
    pub(super) const STR: u8 = 9;
    pub(super) const BYTES: u8 = 10;
    pub(super) const NONE: u8 = 11;
    pub(super) const SOME: u8 = 12;
    pub(super) const UNIT: u8 = 13;
    pub(super) const UNIT_STRUCT: u8 = 14;
    pub(super) const VARIANT: u8 = 15;
    pub(super) const NEWTYPE: u8 = 16;
    pub(super) const SEQ: u8 = 17;
    pub(super) const TUPLE: u8 = 18;
    pub(super) const STRUCT: u8 = 19;
    pub(super) const MAP: u8 = 20;
    pub(super) const FIELD: u8 = 21;
    pub(super) const SKIPPED: u8 = 22;
    pub(super) const END: u8 = 23;
}

type Result<T = ()> = std::result::Result<T, Failed>;

impl<'a> ser::Serializer for &'a mut Hashing {
    type Ok = ();
    type Error = Failed;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = MapHashing<'a>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn serialize_bool(self, v: bool) -> Result {
        self.tag(tag::BOOL);
        self.0.write_u8(u8::from(v));
        Ok(())
    }

    fn serialize_i8(self, v: i8) -> Result {
        self.serialize_i64(i64::from(v))
    }

    fn serialize_i16(self, v: i16) -> Result {
        self.serialize_i64(i64::from(v))
    }

    fn serialize_i32(self, v: i32) -> Result {
        self.serialize_i64(i64::from(v))
    }

    fn serialize_i64(self, v: i64) -> Result {
        self.tag(tag::I64);
        self.0.write_i64(v);
        Ok(())
    }

    fn serialize_i128(self, v: i128) -> Result {
        self.tag(tag::I128);
        self.0.write_i128(v);
        Ok(())
    }

    fn serialize_u8(self, v: u8) -> Result {
        self.serialize_u64(u64::from(v))
    }

    fn serialize_u16(self, v: u16) -> Result {
        self.serialize_u64(u64::from(v))
    }

    fn serialize_u32(self, v: u32) -> Result {
        self.serialize_u64(u64::from(v))
    }

    fn serialize_u64(self, v: u64) -> Result {
        self.tag(tag::U64);
        self.0.write_u64(v);
        Ok(())
    }

    fn serialize_u128(self, v: u128) -> Result {
        self.tag(tag::U128);
        self.0.write_u128(v);
        Ok(())
    }

    fn serialize_f32(self, v: f32) -> Result {
        self.tag(tag::F32);
        self.0.write_u32(v.to_bits());
        Ok(())
    }

    fn serialize_f64(self, v: f64) -> Result {
        self.tag(tag::F64);
        self.0.write_u64(v.to_bits());
        Ok(())
    }

    fn serialize_char(self, v: char) -> Result {
        self.tag(tag::CHAR);
        self.0.write_u32(u32::from(v));
        Ok(())
    }

    fn serialize_str(self, v: &str) -> Result {
        self.tag(tag::STR);
        self.str(v);
        Ok(())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result {
        self.tag(tag::BYTES);
        self.0.write_usize(v.len());
        self.0.write(v);
        Ok(())
    }

    fn serialize_none(self) -> Result {
        self.tag(tag::NONE);
        Ok(())
    }

    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result {
        self.tag(tag::SOME);
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result {
        self.tag(tag::UNIT);
        Ok(())
    }

    fn serialize_unit_struct(self, name: &'static str) -> Result {
        self.tag(tag::UNIT_STRUCT);
        self.str(name);
        Ok(())
    }

    fn serialize_unit_variant(self, _: &'static str, index: u32, variant: &'static str) -> Result {
        self.tag(tag::VARIANT);
        self.0.write_u32(index);
        self.str(variant);
        Ok(())
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result {
        self.tag(tag::NEWTYPE);
        self.str(name);
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result {
        self.serialize_unit_variant("", index, variant)?;
        value.serialize(self)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self> {
        self.tag(tag::SEQ);
        Ok(self)
    }

    fn serialize_tuple(self, _: usize) -> Result<Self> {
        self.tag(tag::TUPLE);
        Ok(self)
    }

    fn serialize_tuple_struct(self, name: &'static str, _: usize) -> Result<Self> {
        self.tag(tag::TUPLE);
        self.str(name);
        Ok(self)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        index: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self> {
        self.serialize_unit_variant("", index, variant)?;
        self.tag(tag::TUPLE);
        Ok(self)
    }

    fn serialize_map(self, _: Option<usize>) -> Result<MapHashing<'a>> {
        Ok(MapHashing {
            parent: self,
            key: None,
            len: 0,
            sum: 0,
        })
    }

    fn serialize_struct(self, name: &'static str, _: usize) -> Result<Self> {
        self.tag(tag::STRUCT);
        self.str(name);
        Ok(self)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        index: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self> {
        self.serialize_unit_variant("", index, variant)?;
        self.tag(tag::STRUCT);
        Ok(self)
    }
}

/// Elements of sequences, tuples and structs go into the same hash in order; the end is marked
/// so that `[[1], 2]` and `[[1, 2]]` differ.
macro_rules! ordered {
    ($trait:ident, $method:ident) => {
        impl ser::$trait for &mut Hashing {
            type Ok = ();
            type Error = Failed;

            fn $method<T: ?Sized + Serialize>(&mut self, value: &T) -> Result {
                value.serialize(&mut **self)
            }

            fn end(self) -> Result {
                self.tag(tag::END);
                Ok(())
            }
        }
    };
}

ordered!(SerializeSeq, serialize_element);
ordered!(SerializeTuple, serialize_element);
ordered!(SerializeTupleStruct, serialize_field);
ordered!(SerializeTupleVariant, serialize_field);

macro_rules! fields {
    ($trait:ident) => {
        impl ser::$trait for &mut Hashing {
            type Ok = ();
            type Error = Failed;

            fn serialize_field<T: ?Sized + Serialize>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result {
                self.tag(tag::FIELD);
                self.str(key);
                value.serialize(&mut **self)
            }

            fn skip_field(&mut self, key: &'static str) -> Result {
                self.tag(tag::SKIPPED);
                self.str(key);
                Ok(())
            }

            fn end(self) -> Result {
                self.tag(tag::END);
                Ok(())
            }
        }
    };
}

fields!(SerializeStruct);
fields!(SerializeStructVariant);

/// A map: each entry is hashed on its own and the entries' hashes are summed, so that their
/// order does not count.
struct MapHashing<'a> {
    parent: &'a mut Hashing,
    key: Option<Hashing>,
    len: u64,
    sum: u64,
}

impl ser::SerializeMap for MapHashing<'_> {
    type Ok = ();
    type Error = Failed;

    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result {
        let mut entry = Hashing::default();
        key.serialize(&mut entry)?;
        self.key = Some(entry);
        Ok(())
    }

    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result {
        let mut entry = self
            .key
            .take()
            .ok_or_else(|| Failed("a map value without its key".to_owned()))?;
        value.serialize(&mut entry)?;
        self.sum = self.sum.wrapping_add(entry.0.finish());
        self.len += 1;
        Ok(())
    }

    fn end(self) -> Result {
        self.parent.tag(tag::MAP);
        self.parent.0.write_u64(self.len);
        self.parent.0.write_u64(self.sum);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use super::of;

    #[test]
    fn equal_values_have_equal_fingerprints_whatever_the_map_order() {
        let a: HashMap<String, u32> = (0..100).map(|i| (i.to_string(), i)).collect();
        let b: HashMap<String, u32> = (0..100).rev().map(|i| (i.to_string(), i)).collect();
        assert_eq!(of(&a), of(&b));
        let sorted: BTreeMap<String, u32> = a.clone().into_iter().collect();
        assert_eq!(of(&a), of(&sorted));
    }

    #[test]
    fn values_json_writes_alike_have_different_fingerprints() {
        assert_ne!(of(&Some(f64::NAN)), of(&None::<f64>));
        assert_ne!(of(&0.0f64), of(&-0.0f64));
        assert_ne!(of(&vec![vec![1], vec![2]]), of(&vec![vec![1, 2]]));
        assert_ne!(of(&Some(())), of(&None::<()>));
        let one: HashMap<u32, u32> = [(1, 2)].into();
        let other: HashMap<u32, u32> = [(2, 1)].into();
        assert_ne!(of(&one), of(&other));
    }
}

//! The binary encoding of the log's records: LEB128 varints, zigzag for signed numbers,
//! length-prefixed UTF-8 strings. Small, fast, and checked on the way in: a record that
//! does not decode is reported, never trusted.

use std::fmt;

pub(crate) fn put_u64(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn put_i64(out: &mut Vec<u8>, v: i64) {
    put_u64(out, ((v << 1) ^ (v >> 63)) as u64);
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u64(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Why a record did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodeError {
    pub at: usize,
    pub what: &'static str,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.what, self.at)
    }
}

/// Reads a record's fields in order.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn fail<T>(&self, what: &'static str) -> Result<T, DecodeError> {
        Err(DecodeError { at: self.pos, what })
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        match self.buf.get(self.pos) {
            Some(b) => {
                self.pos += 1;
                Ok(*b)
            }
            None => self.fail("a byte past the end"),
        }
    }

    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        self.fail("a number longer than ten bytes")
    }

    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        let v = self.u64()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        u32::try_from(self.u64()?).or_else(|_| self.fail("a number too large"))
    }

    /// How many bytes are left.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The next length-prefixed bytes.
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = usize::try_from(self.u64()?).or_else(|_| self.fail("a length too large"))?;
        let start = self.pos;
        let Some(bytes) = start
            .checked_add(len)
            .and_then(|end| self.buf.get(start..end))
        else {
            return self.fail("a string running past the end");
        };
        self.pos += len;
        Ok(bytes)
    }

    /// The next string, and where its bytes start in the buffer.
    pub fn str_at(&mut self) -> Result<(&'a str, usize), DecodeError> {
        let bytes = self.bytes()?;
        let start = self.pos - bytes.len();
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok((s, start)),
            Err(_) => {
                self.pos = start;
                self.fail("a string that is not UTF-8")
            }
        }
    }

    pub fn str(&mut self) -> Result<&'a str, DecodeError> {
        self.str_at().map(|(s, _)| s)
    }

    pub fn string(&mut self) -> Result<String, DecodeError> {
        self.str().map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_strings_round_trip() {
        let mut out = Vec::new();
        let nums = [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX];
        let ints = [0i64, -1, 1, i64::MIN, i64::MAX, -1_700_000_000_000];
        for n in nums {
            put_u64(&mut out, n);
        }
        for i in ints {
            put_i64(&mut out, i);
        }
        put_str(&mut out, "");
        put_str(&mut out, "Zürich – 東京");
        let mut r = Reader::new(&out);
        for n in nums {
            assert_eq!(r.u64().expect("u64"), n);
        }
        for i in ints {
            assert_eq!(r.i64().expect("i64"), i);
        }
        assert_eq!(r.str().expect("empty"), "");
        let (s, at) = r.str_at().expect("text");
        assert_eq!(s, "Zürich – 東京");
        assert_eq!(&out[at..at + s.len()], s.as_bytes());
        assert!(r.is_empty());
    }

    #[test]
    fn short_or_bad_input_is_an_error_not_a_panic() {
        assert!(Reader::new(&[0x80]).u64().is_err());
        assert!(Reader::new(&[0xff; 11]).u64().is_err());
        assert!(Reader::new(&[5, b'a']).str().is_err());
        assert!(Reader::new(&[2, 0xff, 0xfe]).str().is_err());
        assert!(
            Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])
                .str()
                .is_err()
        );
        assert!(Reader::new(&[]).u8().is_err());
    }
}

//! A small length-prefixed binary encoding for the files the launcher and the inner
//! mode exchange. Raw bytes, so non-UTF-8 arguments and environments survive exactly.

use anyhow::{Context, Result, bail};

#[derive(Default)]
pub struct Encoder {
    bytes: Vec<u8>,
}

impl Encoder {
    pub fn u32(&mut self, value: u32) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self
    }

    pub fn u64(&mut self, value: u64) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self
    }

    pub fn bool(&mut self, value: bool) -> &mut Self {
        self.u32(value as u32)
    }

    pub fn bytes(&mut self, value: &[u8]) -> &mut Self {
        self.u32(u32::try_from(value.len()).expect("field larger than 4 GiB"));
        self.bytes.extend_from_slice(value);
        self
    }

    pub fn list<T>(&mut self, items: &[T], mut each: impl FnMut(&mut Self, &T)) -> &mut Self {
        self.u32(u32::try_from(items.len()).expect("list longer than 2^32"));
        for item in items {
            each(self, item);
        }
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

pub struct Decoder<'a> {
    rest: &'a [u8],
}

impl<'a> Decoder<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Decoder { rest: bytes }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.rest.len() < n {
            bail!("truncated: wanted {n} more bytes, {} left", self.rest.len());
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into()?))
    }

    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into()?))
    }

    pub fn bool(&mut self) -> Result<bool> {
        match self.u32()? {
            0 => Ok(false),
            1 => Ok(true),
            other => bail!("bad boolean {other}"),
        }
    }

    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    pub fn list<T>(&mut self, mut each: impl FnMut(&mut Self) -> Result<T>) -> Result<Vec<T>> {
        let count = self.u32()? as usize;
        // Each item takes at least 4 bytes: refuse counts the input cannot hold.
        if count > self.rest.len() / 4 + 1 {
            bail!("list of {count} items in {} bytes", self.rest.len());
        }
        (0..count).map(|i| each(self).with_context(|| format!("item {i}"))).collect()
    }

    pub fn end(self) -> Result<()> {
        if !self.rest.is_empty() {
            bail!("{} trailing bytes", self.rest.len());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut e = Encoder::default();
        e.u32(7).u64(u64::MAX).bool(true).bytes(b"\xff\x00a");
        e.list(&[1u32, 2, 3], |e, v| {
            e.u32(*v);
        });
        let bytes = e.finish();
        let mut d = Decoder::new(&bytes);
        assert_eq!(d.u32().unwrap(), 7);
        assert_eq!(d.u64().unwrap(), u64::MAX);
        assert!(d.bool().unwrap());
        assert_eq!(d.bytes().unwrap(), b"\xff\x00a");
        assert_eq!(d.list(|d| d.u32()).unwrap(), [1, 2, 3]);
        d.end().unwrap();
    }

    #[test]
    fn truncated_and_oversized_input_is_an_error_not_a_panic() {
        assert!(Decoder::new(&[1, 0]).u32().is_err());
        assert!(Decoder::new(&[0xff, 0xff, 0xff, 0xff]).bytes().is_err());
        assert!(Decoder::new(&[0xff, 0xff, 0xff, 0x7f]).list(|d| d.u32()).is_err());
        assert!(Decoder::new(&[1]).end().is_err());
    }
}

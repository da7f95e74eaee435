//! Bounds-checked little-endian reading and writing for the codecs.

use bytes::Bytes;

/// Reads little-endian fields from a byte slice; every read checks bounds.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.remaining() < n {
            return Err(format!(
                "truncated: need {n} bytes at offset {}, {} left",
                self.pos,
                self.remaining()
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    /// An unsigned LEB128 varint (see [`varint`](super::varint)) in its shortest form: a value
    /// has one encoding, so a decoded structure re-encodes to its bytes.
    pub(crate) fn uvarint(&mut self) -> Result<u64, String> {
        let mut end = self.pos;
        let v = super::varint::get_uvarint(self.buf, &mut end).ok_or_else(|| {
            format!(
                "truncated or too large varint at offset {} ({} bytes left)",
                self.pos,
                self.remaining()
            )
        })?;
        if end - self.pos > 1 && self.buf[end - 1] == 0 {
            return Err(format!(
                "varint at offset {} is longer than its value needs",
                self.pos
            ));
        }
        self.pos = end;
        Ok(v)
    }

    /// A `u16` length followed by that many bytes.
    pub(crate) fn short_bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u16()? as usize;
        self.take(n)
    }

    /// An optional `short_bytes`: a presence byte, 0 or 1, then the bytes if present.
    pub(crate) fn opt_short_bytes(&mut self) -> Result<Option<&'a [u8]>, String> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.short_bytes()?)),
            b => Err(format!("bad presence byte {b} at offset {}", self.pos - 1)),
        }
    }

    pub(crate) fn expect_end(&self) -> Result<(), String> {
        if self.remaining() != 0 {
            return Err(format!(
                "{} trailing bytes at offset {}",
                self.remaining(),
                self.pos
            ));
        }
        Ok(())
    }
}

/// Appends a `u16` length and the bytes; the caller guarantees `b.len() <= u16::MAX`.
pub(crate) fn put_short_bytes(out: &mut Vec<u8>, b: &[u8]) {
    let n = u16::try_from(b.len()).expect("keys and names are at most u16::MAX bytes");
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(b);
}

/// Appends an optional `short_bytes` behind a presence byte.
pub(crate) fn put_opt_short_bytes(out: &mut Vec<u8>, b: Option<&Bytes>) {
    match b {
        None => out.push(0),
        Some(b) => {
            out.push(1);
            put_short_bytes(out, b);
        }
    }
}

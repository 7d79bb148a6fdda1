//! Binary encoding of [`ClientRecord`] for stores that keep bytes (sled, later SQL blobs).
//!
//! Hand-written rather than serde: the format is small, must stay stable across crate versions
//! (it is on disk), and decoding runs on bytes that may be corrupt, so every length is checked
//! against the bounds the encoder enforces and nothing can make the decoder panic or allocate
//! more than the input's size.
//!
//! Format 1 (all integers big-endian):
//!
//! ```text
//! u8  format = 1
//! u64 created_at, u64 last_used_at, u64 revoked_before
//! slot current, slot new        where slot = u8 0 (absent)
//!                                      | u8 1, [u8; 32] nonce, u8 len, mechanism (UTF-8),
//!                                        u64 issued_at, u64 expires_at, u64 chain_started_at,
//!                                        u8 0 | u8 1 u32 max_count
//! label software, label device  where label = u8 0 | u8 1, u16 len, UTF-8
//! ```
//!
//! Trailing bytes are an error: a record is the whole value.

use zeroize::Zeroizing;

use super::{ClientRecord, MAX_LABEL_BYTES, MAX_MECHANISM_BYTES, StoreError, TokenSlot};

/// The format byte written by [`encode`].
pub(crate) const FORMAT_V1: u8 = 1;

/// Checks the size bounds every stored record must meet ([`MAX_MECHANISM_BYTES`],
/// [`MAX_LABEL_BYTES`]). Stores that keep records as values call it so they reject exactly what
/// [`encode`] rejects.
pub(crate) fn check_record(record: &ClientRecord) -> Result<(), StoreError> {
    for slot in [&record.current, &record.new].into_iter().flatten() {
        if slot.mechanism.len() > MAX_MECHANISM_BYTES {
            return Err(StoreError::InvalidRecord("mechanism too long"));
        }
    }
    if record
        .software
        .as_ref()
        .is_some_and(|l| l.len() > MAX_LABEL_BYTES)
    {
        return Err(StoreError::InvalidRecord("software too long"));
    }
    if record
        .device
        .as_ref()
        .is_some_and(|l| l.len() > MAX_LABEL_BYTES)
    {
        return Err(StoreError::InvalidRecord("device too long"));
    }
    Ok(())
}

/// Encodes `record`, rejecting one whose mechanism or labels are too long.
///
/// The output holds slot nonces, so it is zeroized when dropped.
pub(crate) fn encode(record: &ClientRecord) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    check_record(record)?;
    let mut out = Zeroizing::new(Vec::with_capacity(encoded_len_hint(record)));
    out.push(FORMAT_V1);
    put_u64(&mut out, record.created_at);
    put_u64(&mut out, record.last_used_at);
    put_u64(&mut out, record.revoked_before);
    put_slot(&mut out, record.current.as_ref())?;
    put_slot(&mut out, record.new.as_ref())?;
    put_label(&mut out, record.software.as_deref(), "software too long")?;
    put_label(&mut out, record.device.as_deref(), "device too long")?;
    Ok(out)
}

/// Decodes [`encode`] output. Any malformed input yields [`StoreError::Corrupt`].
pub(crate) fn decode(bytes: &[u8]) -> Result<ClientRecord, StoreError> {
    let mut r = Reader { bytes, pos: 0 };
    match r.u8()? {
        FORMAT_V1 => {}
        other => return Err(corrupt(format!("unknown record format {other}"))),
    }
    let created_at = r.u64()?;
    let last_used_at = r.u64()?;
    let revoked_before = r.u64()?;
    let current = r.slot()?;
    let new = r.slot()?;
    let software = r.label()?;
    let device = r.label()?;
    if r.pos != bytes.len() {
        return Err(corrupt("trailing bytes".into()));
    }
    Ok(ClientRecord {
        current,
        new,
        created_at,
        last_used_at,
        revoked_before,
        software,
        device,
    })
}

fn encoded_len_hint(record: &ClientRecord) -> usize {
    let slot = |s: Option<&TokenSlot>| s.map_or(1, |s| 1 + 32 + 1 + s.mechanism.len() + 24 + 5);
    let label = |l: Option<&str>| l.map_or(1, |l| 3 + l.len());
    1 + 24
        + slot(record.current.as_ref())
        + slot(record.new.as_ref())
        + label(record.software.as_deref())
        + label(record.device.as_deref())
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_slot(out: &mut Vec<u8>, slot: Option<&TokenSlot>) -> Result<(), StoreError> {
    let Some(slot) = slot else {
        out.push(0);
        return Ok(());
    };
    if slot.mechanism.len() > MAX_MECHANISM_BYTES {
        return Err(StoreError::InvalidRecord("mechanism too long"));
    }
    out.push(1);
    out.extend_from_slice(&slot.nonce);
    // Fits: MAX_MECHANISM_BYTES < 256.
    out.push(slot.mechanism.len() as u8);
    out.extend_from_slice(slot.mechanism.as_bytes());
    put_u64(out, slot.issued_at);
    put_u64(out, slot.expires_at);
    put_u64(out, slot.chain_started_at);
    match slot.max_count {
        None => out.push(0),
        Some(c) => {
            out.push(1);
            out.extend_from_slice(&c.to_be_bytes());
        }
    }
    Ok(())
}

fn put_label(out: &mut Vec<u8>, label: Option<&str>, err: &'static str) -> Result<(), StoreError> {
    let Some(label) = label else {
        out.push(0);
        return Ok(());
    };
    if label.len() > MAX_LABEL_BYTES {
        return Err(StoreError::InvalidRecord(err));
    }
    out.push(1);
    // Fits: MAX_LABEL_BYTES < 65536.
    out.extend_from_slice(&(label.len() as u16).to_be_bytes());
    out.extend_from_slice(label.as_bytes());
    Ok(())
}

fn corrupt(msg: String) -> StoreError {
    StoreError::Corrupt(msg)
}

/// A cursor that fails instead of reading past the end.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| corrupt("truncated record".into()))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, StoreError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, StoreError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(a))
    }

    fn u64(&mut self) -> Result<u64, StoreError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }

    /// A presence byte: 0 or 1, anything else is corruption.
    fn present(&mut self, what: &str) -> Result<bool, StoreError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(corrupt(format!("bad {what} tag {other}"))),
        }
    }

    fn str(&mut self, len: usize, what: &str) -> Result<String, StoreError> {
        let b = self.take(len)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| corrupt(format!("{what} is not UTF-8")))
    }

    fn slot(&mut self) -> Result<Option<TokenSlot>, StoreError> {
        if !self.present("slot")? {
            return Ok(None);
        }
        // Built before reading the rest so the nonce lives only inside the slot, which wipes
        // it on drop, including on an early return below.
        let mut slot = TokenSlot {
            nonce: [0u8; 32],
            mechanism: String::new(),
            issued_at: 0,
            expires_at: 0,
            chain_started_at: 0,
            max_count: None,
        };
        slot.nonce.copy_from_slice(self.take(32)?);
        let len = self.u8()? as usize;
        if len > MAX_MECHANISM_BYTES {
            return Err(corrupt("mechanism too long".into()));
        }
        slot.mechanism = self.str(len, "mechanism")?;
        slot.issued_at = self.u64()?;
        slot.expires_at = self.u64()?;
        slot.chain_started_at = self.u64()?;
        slot.max_count = if self.present("max_count")? {
            Some(self.u32()?)
        } else {
            None
        };
        Ok(Some(slot))
    }

    fn label(&mut self) -> Result<Option<String>, StoreError> {
        if !self.present("label")? {
            return Ok(None);
        }
        let len = self.u16()? as usize;
        if len > MAX_LABEL_BYTES {
            return Err(corrupt("label too long".into()));
        }
        self.str(len, "label").map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn slot_strategy() -> impl Strategy<Value = TokenSlot> {
        (
            any::<[u8; 32]>(),
            "[A-Z0-9-]{0,32}",
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<Option<u32>>(),
        )
            .prop_map(
                |(nonce, mechanism, issued_at, expires_at, chain_started_at, max_count)| {
                    TokenSlot {
                        nonce,
                        mechanism,
                        issued_at,
                        expires_at,
                        chain_started_at,
                        max_count,
                    }
                },
            )
    }

    /// Labels up to the byte bound, including multi-byte characters.
    fn label_strategy() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(
            ".{0,64}".prop_filter("within MAX_LABEL_BYTES", |s| s.len() <= MAX_LABEL_BYTES),
        )
    }

    fn record_strategy() -> impl Strategy<Value = ClientRecord> {
        (
            proptest::option::of(slot_strategy()),
            proptest::option::of(slot_strategy()),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            label_strategy(),
            label_strategy(),
        )
            .prop_map(
                |(current, new, created_at, last_used_at, revoked_before, software, device)| {
                    ClientRecord {
                        current,
                        new,
                        created_at,
                        last_used_at,
                        revoked_before,
                        software,
                        device,
                    }
                },
            )
    }

    fn sample() -> ClientRecord {
        ClientRecord {
            current: Some(TokenSlot {
                nonce: [7; 32],
                mechanism: "HT-SHA-256-NONE".into(),
                issued_at: 10,
                expires_at: 20,
                chain_started_at: 5,
                max_count: Some(3),
            }),
            new: None,
            created_at: 1,
            last_used_at: 2,
            revoked_before: 0,
            software: Some("Conversations".into()),
            device: None,
        }
    }

    proptest! {
        #[test]
        fn round_trip(record in record_strategy()) {
            let bytes = encode(&record).unwrap();
            prop_assert_eq!(bytes[0], FORMAT_V1);
            prop_assert_eq!(decode(&bytes).unwrap(), record);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            match decode(&bytes) {
                Ok(record) => {
                    // Whatever decodes must re-encode to the same bytes (the format is canonical).
                    prop_assert_eq!(&encode(&record).unwrap()[..], &bytes[..]);
                }
                Err(StoreError::Corrupt(_)) => {}
                Err(other) => prop_assert!(false, "unexpected error {other:?}"),
            }
        }

        #[test]
        fn mutated_records_never_panic(
            record in record_strategy(),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
            cut in any::<usize>(),
        ) {
            let mut bytes = encode(&record).unwrap().to_vec();
            for (i, b) in flips {
                let i = i % bytes.len();
                bytes[i] ^= b;
            }
            let _ = decode(&bytes);
            let cut = cut % (bytes.len() + 1);
            let _ = decode(&bytes[..cut]);
        }
    }

    #[test]
    fn every_truncation_is_corrupt() {
        let bytes = encode(&sample()).unwrap();
        for len in 0..bytes.len() {
            assert!(matches!(decode(&bytes[..len]), Err(StoreError::Corrupt(_))));
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(matches!(decode(&longer), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn unknown_format_is_corrupt() {
        let mut bytes = encode(&sample()).unwrap().to_vec();
        bytes[0] = 2;
        assert!(matches!(decode(&bytes), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn encode_enforces_bounds() {
        let mut r = sample();
        r.current.as_mut().unwrap().mechanism = "X".repeat(MAX_MECHANISM_BYTES);
        assert!(encode(&r).is_ok());
        r.current.as_mut().unwrap().mechanism = "X".repeat(MAX_MECHANISM_BYTES + 1);
        assert!(matches!(encode(&r), Err(StoreError::InvalidRecord(_))));

        let mut r = sample();
        r.software = Some("s".repeat(MAX_LABEL_BYTES));
        assert!(encode(&r).is_ok());
        r.software = Some("s".repeat(MAX_LABEL_BYTES + 1));
        assert!(matches!(encode(&r), Err(StoreError::InvalidRecord(_))));

        let mut r = sample();
        r.device = Some("é".repeat(MAX_LABEL_BYTES / 2 + 1));
        assert!(matches!(encode(&r), Err(StoreError::InvalidRecord(_))));

        let mut r = sample();
        r.new = Some(r.current.clone().unwrap());
        r.new.as_mut().unwrap().mechanism = "Y".repeat(MAX_MECHANISM_BYTES + 1);
        assert!(matches!(encode(&r), Err(StoreError::InvalidRecord(_))));
    }

    #[test]
    fn errors_do_not_leak_nonce_bytes() {
        let mut bytes = encode(&sample()).unwrap().to_vec();
        let last = bytes.len() - 1;
        bytes[last] = 9; // bad device tag
        let err = decode(&bytes).unwrap_err().to_string();
        assert!(!err.contains("7, 7"), "{err}");
    }
}

//! Postgres binary wire values rendered in their text input form: used for key values (first/last key of a range,
//! the key named in an error). Each output parses back in Postgres to the same value.

use std::fmt::Write;

use crate::contract::model::{KeyType, KeyValue};

/// Days between 1970-01-01 and 2000-01-01 (Postgres' date epoch).
pub const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds between 1970-01-01 and 2000-01-01.
pub const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Days since 1970-01-01 of a proleptic Gregorian date with astronomical year numbering (1 BC = year 0).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`].
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `YYYY-MM-DD` or `YYYY-MM-DD BC` for days since 1970-01-01.
fn write_date(out: &mut String, unix_days: i64) -> (bool, ()) {
    let (y, m, d) = civil_from_days(unix_days);
    let bc = y <= 0;
    let year = if bc { 1 - y } else { y };
    let _ = write!(out, "{year:04}-{m:02}-{d:02}");
    (bc, ())
}

/// Text of a date given as days since 2000-01-01 (the wire form).
pub fn date(pg_days: i32) -> String {
    match pg_days {
        i32::MAX => "infinity".into(),
        i32::MIN => "-infinity".into(),
        d => {
            let mut s = String::with_capacity(16);
            let (bc, ()) = write_date(&mut s, d as i64 + PG_EPOCH_DAYS as i64);
            if bc {
                s.push_str(" BC");
            }
            s
        }
    }
}

/// Text of a timestamp given as microseconds since 2000-01-01; `tz` appends `+00` (the value is UTC).
pub fn timestamp(pg_micros: i64, tz: bool) -> String {
    match pg_micros {
        i64::MAX => return "infinity".into(),
        i64::MIN => return "-infinity".into(),
        _ => {}
    }
    let unix = pg_micros as i128 + PG_EPOCH_MICROS as i128;
    let day_us = 86_400_000_000i128;
    let days = unix.div_euclid(day_us) as i64;
    let tod = unix.rem_euclid(day_us) as i64;
    let mut s = String::with_capacity(40);
    let (bc, ()) = write_date(&mut s, days);
    let (h, rem) = (tod / 3_600_000_000, tod % 3_600_000_000);
    let (mi, rem) = (rem / 60_000_000, rem % 60_000_000);
    let (sec, us) = (rem / 1_000_000, rem % 1_000_000);
    let _ = write!(s, " {h:02}:{mi:02}:{sec:02}");
    if us != 0 {
        let frac = format!("{us:06}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    if tz {
        s.push_str("+00");
    }
    if bc {
        s.push_str(" BC");
    }
    s
}

/// Canonical lower-case 8-4-4-4-12 text of a 16-byte uuid, into a stack buffer.
pub fn uuid(bytes: &[u8; 16]) -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'-'; 36];
    let mut o = 0;
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            o += 1;
        }
        out[o] = HEX[(b >> 4) as usize];
        out[o + 1] = HEX[(b & 0xf) as usize];
        o += 2;
    }
    out
}

/// Numeric's binary header and digits, parsed and checked.
#[derive(Debug)]
pub struct NumericWire<'a> {
    pub weight: i16,
    pub sign: u16,
    pub dscale: u16,
    digits: &'a [u8],
}

pub const NUMERIC_POS: u16 = 0x0000;
pub const NUMERIC_NEG: u16 = 0x4000;
pub const NUMERIC_NAN: u16 = 0xC000;
pub const NUMERIC_PINF: u16 = 0xD000;
pub const NUMERIC_NINF: u16 = 0xF000;

impl<'a> NumericWire<'a> {
    pub fn parse(b: &'a [u8]) -> Result<Self, String> {
        if b.len() < 8 {
            return Err(format!("numeric value of {} bytes is shorter than its header", b.len()));
        }
        let ndigits = i16::from_be_bytes([b[0], b[1]]);
        let weight = i16::from_be_bytes([b[2], b[3]]);
        let sign = u16::from_be_bytes([b[4], b[5]]);
        let dscale = u16::from_be_bytes([b[6], b[7]]);
        if ndigits < 0 || b.len() != 8 + 2 * ndigits as usize {
            return Err(format!("numeric value with {ndigits} digits has {} bytes", b.len()));
        }
        // PostgreSQL's display scale is 14 bits (NUMERIC_DSCALE_MASK, src/backend/utils/adt/numeric.c), its signs
        // these four, and every digit base 10000: anything else is not a numeric a server sent.
        if dscale > 0x3FFF {
            return Err(format!("numeric display scale {dscale} is above PostgreSQL's 16383"));
        }
        if ![NUMERIC_POS, NUMERIC_NEG, NUMERIC_NAN, NUMERIC_PINF, NUMERIC_NINF].contains(&sign) {
            return Err(format!("numeric sign {sign:#06x} is not one PostgreSQL sends"));
        }
        if b[8..]
            .chunks_exact(2)
            .any(|c| !(0..10000).contains(&i16::from_be_bytes([c[0], c[1]])))
        {
            return Err("numeric digit outside 0..9999".into());
        }
        Ok(Self {
            weight,
            sign,
            dscale,
            digits: &b[8..],
        })
    }

    /// Base-10000 digits, most significant first.
    pub fn digits(&self) -> impl Iterator<Item = i128> + '_ {
        self.digits
            .chunks_exact(2)
            .map(|c| i16::from_be_bytes([c[0], c[1]]) as i128)
    }

    pub fn special(&self) -> Option<&'static str> {
        match self.sign {
            NUMERIC_NAN => Some("NaN"),
            NUMERIC_PINF => Some("Infinity"),
            NUMERIC_NINF => Some("-Infinity"),
            _ => None,
        }
    }

    /// The value as an integer scaled by `10^scale`, if it fits exactly in `precision` digits.
    pub fn to_scaled_i128(&self, precision: u8, scale: i8) -> Result<i128, String> {
        if let Some(s) = self.special() {
            return Err(format!("{s} has no decimal representation"));
        }
        // Integer digits first, for a message that says what does not fit.
        let int_digits = match self.digits().next() {
            Some(first) if self.weight >= 0 => 4 * self.weight as i32 + first.to_string().len() as i32,
            _ => 0,
        };
        if int_digits > precision as i32 - scale as i32 {
            return Err(format!(
                "has {int_digits} integer digits, more than the {} of decimal({precision},{scale})",
                precision as i32 - scale as i32
            ));
        }
        // Horner over base-10000 groups. A group's unit digit sits at 10^e of the scaled integer; the group that
        // straddles the scale keeps only its digits above it (the rest must be zero: no rounding), and groups wholly
        // below the scale must be zero.
        let overflow = || format!("does not fit decimal({precision},{scale})");
        let frac_error = || format!("has more than {scale} fractional digits (no rounding is done)");
        let mut acc: i128 = 0;
        let mut last_e: Option<i32> = None;
        for (i, d) in self.digits().enumerate() {
            let e = 4 * (self.weight as i32 - i as i32) + scale as i32;
            if e >= 0 {
                acc = acc
                    .checked_mul(10_000)
                    .and_then(|a| a.checked_add(d))
                    .ok_or_else(overflow)?;
                last_e = Some(e);
            } else if e > -4 {
                let cut = 10i128.pow((-e) as u32);
                if d % cut != 0 {
                    return Err(frac_error());
                }
                let keep = 10i128.pow((4 + e) as u32);
                acc = acc
                    .checked_mul(keep)
                    .and_then(|a| a.checked_add(d / cut))
                    .ok_or_else(overflow)?;
                last_e = Some(0);
            } else if d != 0 {
                return Err(frac_error());
            }
        }
        if let Some(e) = last_e.filter(|e| *e > 0) {
            acc = 10i128
                .checked_pow(e as u32)
                .and_then(|m| acc.checked_mul(m))
                .ok_or_else(overflow)?;
        }
        if acc >= 10i128.pow(precision as u32) {
            return Err(format!(
                "has more integer digits than decimal({precision},{scale}) holds"
            ));
        }
        Ok(if self.sign == NUMERIC_NEG { -acc } else { acc })
    }

    /// Postgres' text output of the value (`numeric_out`): all `dscale` fractional digits.
    pub fn to_text(&self) -> String {
        if let Some(s) = self.special() {
            return s.to_string();
        }
        let digits: Vec<i128> = self.digits().collect();
        let mut s = String::new();
        if self.sign == NUMERIC_NEG {
            s.push('-');
        }
        let weight = self.weight as i32;
        if weight < 0 {
            s.push('0');
        } else {
            for i in 0..=weight {
                let d = digits.get(i as usize).copied().unwrap_or(0);
                if i == 0 {
                    let _ = write!(s, "{d}");
                } else {
                    let _ = write!(s, "{d:04}");
                }
            }
        }
        if self.dscale > 0 {
            s.push('.');
            let mut frac = String::new();
            let mut i = weight + 1;
            while frac.len() < self.dscale as usize {
                let d = if i >= 0 {
                    digits.get(i as usize).copied().unwrap_or(0)
                } else {
                    0
                };
                let _ = write!(frac, "{d:04}");
                i += 1;
            }
            frac.truncate(self.dscale as usize);
            s.push_str(&frac);
        }
        s
    }
}

/// A key field's wire bytes rendered as a [`KeyValue`].
pub fn key_value(ty: KeyType, b: &[u8]) -> Result<KeyValue, String> {
    fn fixed<const N: usize>(b: &[u8]) -> Result<[u8; N], String> {
        b.try_into().map_err(|_| format!("expected {N} bytes, got {}", b.len()))
    }
    let value = match ty {
        KeyType::Int2 => i16::from_be_bytes(fixed(b)?).to_string(),
        KeyType::Int4 => i32::from_be_bytes(fixed(b)?).to_string(),
        KeyType::Int8 => i64::from_be_bytes(fixed(b)?).to_string(),
        KeyType::Numeric => NumericWire::parse(b)?.to_text(),
        KeyType::Text | KeyType::Varchar | KeyType::Bpchar => std::str::from_utf8(b)
            .map_err(|e| format!("invalid UTF-8: {e}"))?
            .to_string(),
        KeyType::Uuid => String::from_utf8_lossy(&uuid(&fixed(b)?)).into_owned(),
        KeyType::Date => date(i32::from_be_bytes(fixed(b)?)),
        KeyType::Timestamp => timestamp(i64::from_be_bytes(fixed(b)?), false),
        KeyType::Timestamptz => timestamp(i64::from_be_bytes(fixed(b)?), true),
    };
    Ok(KeyValue::new(ty, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_numeric_header_no_server_sends_is_an_error_not_a_hang() {
        // Found by the fuzz test: a display scale of 65535 made to_text loop until an integer overflowed.
        let wire = |sign: u16, dscale: u16, digit: i16| {
            let mut b = vec![0, 1, 0, 0];
            b.extend(sign.to_be_bytes());
            b.extend(dscale.to_be_bytes());
            b.extend(digit.to_be_bytes());
            b
        };
        assert!(NumericWire::parse(&wire(NUMERIC_POS, 0xFFFF, 1))
            .unwrap_err()
            .contains("display scale"));
        assert!(NumericWire::parse(&wire(0x1234, 2, 1)).unwrap_err().contains("sign"));
        assert!(NumericWire::parse(&wire(NUMERIC_POS, 2, 10000))
            .unwrap_err()
            .contains("digit"));
        assert_eq!(
            NumericWire::parse(&wire(NUMERIC_POS, 0x3FFF, 7))
                .unwrap()
                .to_text()
                .len(),
            2 + 0x3FFF
        );
    }

    fn numeric(ndigits: &[i16], weight: i16, sign: u16, dscale: u16) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend((ndigits.len() as i16).to_be_bytes());
        v.extend(weight.to_be_bytes());
        v.extend(sign.to_be_bytes());
        v.extend(dscale.to_be_bytes());
        for d in ndigits {
            v.extend(d.to_be_bytes());
        }
        v
    }

    #[test]
    fn civil_round_trips_over_the_whole_range() {
        for days in (-2_500_000i64..3_000_000_000).step_by(9_973) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(days_from_civil(2000, 1, 1), PG_EPOCH_DAYS as i64);
    }

    #[test]
    fn dates_and_timestamps_print_like_postgres() {
        assert_eq!(date(0), "2000-01-01");
        assert_eq!(date(-1), "1999-12-31");
        // 4713-11-24 BC is Julian day 0, Postgres' earliest date.
        assert_eq!(
            date((days_from_civil(-4712, 11, 24) - PG_EPOCH_DAYS as i64) as i32),
            "4713-11-24 BC"
        );
        assert_eq!(timestamp(1_500_000, false), "2000-01-01 00:00:01.5");
        assert_eq!(timestamp(-1, true), "1999-12-31 23:59:59.999999+00");
    }

    #[test]
    fn numerics_scale_exactly_or_fail() {
        // 12345.6789 = digits [1, 2345, 6789], weight 1, dscale 4
        let b = numeric(&[1, 2345, 6789], 1, NUMERIC_POS, 4);
        let n = NumericWire::parse(&b).unwrap();
        assert_eq!(n.to_scaled_i128(12, 4).unwrap(), 123_456_789);
        assert_eq!(n.to_scaled_i128(12, 6).unwrap(), 12_345_678_900);
        assert!(n.to_scaled_i128(12, 2).is_err(), "rounding is an error");
        assert!(n.to_scaled_i128(6, 4).is_err(), "too many integer digits");
        assert_eq!(n.to_text(), "12345.6789");
        // -0.0005 = digits [5], weight -1, dscale 4
        let b = numeric(&[5], -1, NUMERIC_NEG, 4);
        let n = NumericWire::parse(&b).unwrap();
        assert_eq!(n.to_scaled_i128(5, 4).unwrap(), -5);
        assert_eq!(n.to_text(), "-0.0005");
        // 1e20 = digits [1], weight 5, dscale 0
        let n = numeric(&[1], 5, NUMERIC_POS, 0);
        assert_eq!(NumericWire::parse(&n).unwrap().to_text(), "100000000000000000000");
        // 38 nines as decimal(38,10): 28 integer digits and a fraction group that straddles the scale.
        let mut groups = vec![9999i16; 7];
        groups.extend([9999, 9999, 9900]);
        let b = numeric(&groups, 6, NUMERIC_NEG, 10);
        let n = NumericWire::parse(&b).unwrap();
        assert_eq!(n.to_scaled_i128(38, 10).unwrap(), -(10i128.pow(38) - 1));
        assert!(n.to_scaled_i128(38, 9).is_err());
        let nan = numeric(&[], 0, NUMERIC_NAN, 0);
        assert!(NumericWire::parse(&nan).unwrap().to_scaled_i128(38, 0).is_err());
    }

    #[test]
    fn uuid_text_is_canonical() {
        let b = [0x0b, 0x7e, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0xa, 0xb, 0xc, 0xff];
        assert_eq!(&uuid(&b), b"0b7e0001-0203-0405-0607-08090a0b0cff");
    }
}

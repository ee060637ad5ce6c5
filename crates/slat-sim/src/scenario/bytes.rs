//! Byte counts and addresses as written in scenarios: `4096`, `0x1_0000_0000`, `"4K"`, `"2M"`,
//! `"1G"`, `"3GiB"`, `"0x40000000"`.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};

/// A byte count or an address.
///
/// Written as a TOML integer (decimal, or hexadecimal `0x...`), or as a string: an integer with
/// an optional binary unit `K`, `M`, `G`, `T` (1024-based; `KiB`, `KB`, `k` and friends are
/// accepted too), or a hexadecimal `"0x..."`. `_` separators are allowed.
///
/// ```
/// use slat_sim::scenario::Bytes;
/// assert_eq!(Bytes::parse("2M").unwrap().get(), 2 << 20);
/// assert_eq!(Bytes::parse("3 GiB").unwrap().get(), 3 << 30);
/// assert_eq!(Bytes::parse("0x1000").unwrap().get(), 4096);
/// assert_eq!(Bytes(1 << 30).to_string(), "1G");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Bytes(pub u64);

const EXPECTED: &str = "expected a byte count: an integer, or a string such as \"4K\", \"2M\", \"1G\" or \"0x1000\"";

impl Bytes {
    /// The number of bytes.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// Parse the string form.
    pub fn parse(text: &str) -> Result<Bytes, String> {
        let t: String = text.trim().chars().filter(|&c| c != '_').collect();
        if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            return u64::from_str_radix(hex, 16).map(Bytes).map_err(|_| EXPECTED.to_string());
        }
        let digits = t.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(EXPECTED.to_string());
        }
        let n: u64 = t[..digits].parse().map_err(|_| format!("{text:?} does not fit 64 bits"))?;
        let unit = t[digits..].trim_start().to_ascii_lowercase();
        let shift = match unit.as_str() {
            "" | "b" => 0,
            "k" | "kb" | "kib" => 10,
            "m" | "mb" | "mib" => 20,
            "g" | "gb" | "gib" => 30,
            "t" | "tb" | "tib" => 40,
            _ => return Err(format!("unknown unit {unit:?}; {EXPECTED}")),
        };
        n.checked_mul(1 << shift).map(Bytes).ok_or_else(|| format!("{text:?} does not fit 64 bits"))
    }

    /// Whether the value is a multiple of `align` (a power of two).
    pub const fn is_aligned(self, align: u64) -> bool {
        self.0 & (align - 1) == 0
    }
}

impl From<u64> for Bytes {
    fn from(v: u64) -> Self {
        Bytes(v)
    }
}

/// The largest exact unit: `2G`, `512M`, `4K`, or plain bytes.
impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
            if v != 0 && v % (1 << shift) == 0 {
                return write!(f, "{}{unit}", v >> shift);
            }
        }
        write!(f, "{v}")
    }
}

impl fmt::LowerHex for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

impl<'de> serde::Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte count: an integer, or a string such as \"4K\", \"2M\", \"1G\" or \"0x1000\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Bytes, E> {
                u64::try_from(v).map(Bytes).map_err(|_| E::custom("must not be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Bytes, E> {
                Bytes::parse(s).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_hex() {
        assert_eq!(Bytes::parse("4K"), Ok(Bytes(4096)));
        assert_eq!(Bytes::parse("4k"), Ok(Bytes(4096)));
        assert_eq!(Bytes::parse("1_000"), Ok(Bytes(1000)));
        assert_eq!(Bytes::parse("2 MiB"), Ok(Bytes(2 << 20)));
        assert_eq!(Bytes::parse("0x2000_0000"), Ok(Bytes(0x2000_0000)));
        assert!(Bytes::parse("1.5G").is_err());
        assert!(Bytes::parse("G").is_err());
        assert!(Bytes::parse("99999999999T").is_err());
    }

    #[test]
    fn displays_largest_unit() {
        assert_eq!(Bytes(3 << 30).to_string(), "3G");
        assert_eq!(Bytes(1536 << 20).to_string(), "1536M");
        assert_eq!(Bytes(0).to_string(), "0");
        assert_eq!(Bytes(100).to_string(), "100");
    }
}

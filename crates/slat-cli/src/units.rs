//! Number formatting shared by the terminal summary and the HTML report: grouped counts, short
//! counts for axes, binary byte sizes, ratios and percentages.

/// `1234567` as `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A short count for axis ticks and headers, three significant digits at most: `950`, `12k`,
/// `524k`, `1.5M`, `2G`.
pub fn short_count(n: f64) -> String {
    let a = n.abs();
    let (v, suffix) = if a >= 1e12 {
        (n / 1e12, "T")
    } else if a >= 1e9 {
        (n / 1e9, "G")
    } else if a >= 1e6 {
        (n / 1e6, "M")
    } else if a >= 1e3 {
        (n / 1e3, "k")
    } else {
        (n, "")
    };
    // Three significant digits: 1.25M, 12.5M, 125M.
    let decimals = if v.abs() >= 100.0 {
        0
    } else if v.abs() >= 10.0 {
        1
    } else {
        2
    };
    format!("{}{suffix}", trim_decimal(v, decimals))
}

/// Binary units for byte sizes, largest first.
const BYTE_UNITS: [(u64, &str); 5] = [(1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB"), (1, "B")];

/// The largest binary unit not above `max` bytes (at least bytes): `(divisor, name)`.
pub fn byte_unit(max: f64) -> (f64, &'static str) {
    BYTE_UNITS.iter().find(|(d, _)| max >= *d as f64).map(|&(d, u)| (d as f64, u)).unwrap_or((1.0, "B"))
}

/// `3221225472` as `3 GiB`, `1572864` as `1.5 MiB` (up to two decimals, trailing zeros dropped).
pub fn bytes(n: u64) -> String {
    let (d, u) = byte_unit(n as f64);
    format!("{} {u}", trim_decimal(n as f64 / d, 2))
}

/// A ratio with a precision fitting its size: `0.042`, `1.37`, `12.5`, `1,234`.
pub fn ratio(x: f64) -> String {
    if !x.is_finite() {
        return "-".to_string();
    }
    let a = x.abs();
    if a == 0.0 {
        "0".to_string()
    } else if a >= 999.5 {
        // Rounds to 1,000 or more: with the thousands separator, as the larger values.
        count(x.round() as u64)
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 0.1 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// A share in 0..=1 as a percentage: `38%`, `2.3%`, `<0.1%`, `99.7%` (never rounded up to 100%).
pub fn percent(share: f64) -> String {
    if !share.is_finite() {
        return "-".to_string();
    }
    let p = share * 100.0;
    if p == 0.0 {
        "0%".to_string()
    } else if p > 0.0 && p < 0.1 {
        "<0.1%".to_string()
    } else if p > 99.0 && p < 100.0 {
        // Never round a near-complete share up to 100%.
        format!("{:.1}%", (p * 10.0).floor() / 10.0)
    } else if p >= 10.0 {
        format!("{p:.0}%")
    } else {
        format!("{p:.1}%")
    }
}

/// `v` with at most `decimals` decimals and no trailing zeros (`1.50` -> `1.5`, `2.00` -> `2`).
pub fn trim_decimal(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s == "-0" {
            "0".to_string()
        } else {
            s.to_string()
        }
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_grouped() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1234567), "1,234,567");
    }

    #[test]
    fn short_counts() {
        assert_eq!(short_count(0.0), "0");
        assert_eq!(short_count(950.0), "950");
        assert_eq!(short_count(12_000.0), "12k");
        assert_eq!(short_count(1_500_000.0), "1.5M");
        assert_eq!(short_count(2e9), "2G");
        assert_eq!(short_count(524_288.0), "524k");
        assert_eq!(short_count(3_524_288.0), "3.52M");
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(4096), "4 KiB");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
        assert_eq!(bytes(1 << 40), "1 TiB");
        assert_eq!(byte_unit(3.0 * (1u64 << 20) as f64).1, "MiB");
    }

    #[test]
    fn ratios_and_percentages() {
        assert_eq!(ratio(0.0), "0");
        assert_eq!(ratio(0.0421), "0.042");
        assert_eq!(ratio(1.372), "1.37");
        assert_eq!(ratio(12.54), "12.5");
        assert_eq!(ratio(999.7), "1,000");
        assert_eq!(ratio(1234.4), "1,234");
        assert_eq!(ratio(f64::NAN), "-");
        assert_eq!(percent(0.375), "38%");
        assert_eq!(percent(0.0234), "2.3%");
        assert_eq!(percent(0.0001), "<0.1%");
        assert_eq!(percent(0.0), "0%");
        assert_eq!(percent(0.9974), "99.7%");
        assert_eq!(percent(0.99999), "99.9%");
        assert_eq!(percent(1.0), "100%");
    }
}

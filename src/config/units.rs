//! Value types of the file that carry units: durations, sizes, worker counts.
//!
//! Their `Deserialize` impls fail inside serde_yaml, so a bad value is reported with its line.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// `auto` or a positive count.
pub(super) enum Workers {
    Auto,
    Count(usize),
}

/// A duration; `None` when zero (off).
pub(super) struct Dur(pub(super) Option<Duration>);

/// `flush_interval`: a duration or -1. Nothing reads the value: every upstream read is
/// written to the client at once, which meets any interval (and -1, and event streams).
pub(super) struct FlushInterval(#[allow(dead_code)] bool);

/// A byte count.
pub(super) struct Size(pub(super) u64);

/// `dial_fallback_delay`: a duration, or a negative one (`-1`, `"-1s"`: `None`) that turns
/// racing off. Zero is kept as zero (validation reads it as the default, as Go does).
pub(super) struct SignedDur(pub(super) Option<Duration>);

/// The duration written, else `default`; `None` means off (written as 0).
pub(super) fn dur(d: Option<Dur>, default: Duration) -> Option<Duration> {
    match d {
        Some(Dur(v)) => v,
        None => (!default.is_zero()).then_some(default),
    }
}

/// The size written, else `default`.
pub(super) fn size(s: Option<Size>, default: u64) -> u64 {
    s.map_or(default, |Size(n)| n)
}

impl<'de> Deserialize<'de> for Workers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Workers;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`auto` or a positive integer")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Workers, E> {
                match usize::try_from(n) {
                    Ok(n) if n >= 1 => Ok(Workers::Count(n)),
                    _ => Err(E::custom("must be `auto` or a positive integer")),
                }
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Workers, E> {
                Err(E::custom("must be `auto` or a positive integer"))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Workers, E> {
                if s == "auto" {
                    return Ok(Workers::Auto);
                }
                match s.parse::<u64>() {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format!(
                        "invalid worker count \"{s}\" (expected `auto` or a positive integer)"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"250ms\", \"5s\" or \"1m30s\"")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Dur, E> {
                if n == 0 {
                    Ok(Dur(None))
                } else {
                    Err(E::custom(format!(
                        "duration {n} needs a unit, e.g. \"{n}s\" or \"{n}ms\""
                    )))
                }
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Dur, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format!(
                        "invalid duration {n} (cannot be negative)"
                    ))),
                }
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Dur, E> {
                let d = parse_duration(s).map_err(E::custom)?;
                Ok(Dur((!d.is_zero()).then_some(d)))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for SignedDur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SignedDur;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"300ms\", or a negative one such as -1")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<SignedDur, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Ok(SignedDur(None)),
                }
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<SignedDur, E> {
                if n == 0 {
                    Ok(SignedDur(Some(Duration::ZERO)))
                } else {
                    Err(E::custom(format!(
                        "duration {n} needs a unit, e.g. \"{n}ms\" (or -1 to dial one address \
                         at a time)"
                    )))
                }
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<SignedDur, E> {
                match s.trim().strip_prefix('-') {
                    Some(rest) if rest.trim() == "1" => Ok(SignedDur(None)),
                    Some(rest) => parse_duration(rest)
                        .map_err(E::custom)
                        .map(|_| SignedDur(None)),
                    None => Ok(SignedDur(Some(parse_duration(s).map_err(E::custom)?))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for FlushInterval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = FlushInterval;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"100ms\", 0, or -1")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<FlushInterval, E> {
                match n {
                    -1 => Ok(FlushInterval(true)),
                    n if n >= 0 => self.visit_u64(n as u64),
                    n => Err(E::custom(format!(
                        "invalid flush interval {n} (expected a duration, 0, or -1)"
                    ))),
                }
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<FlushInterval, E> {
                if n == 0 {
                    Ok(FlushInterval(false))
                } else {
                    Err(E::custom(format!(
                        "duration {n} needs a unit, e.g. \"{n}ms\" (or -1 to flush every write)"
                    )))
                }
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<FlushInterval, E> {
                if s.trim() == "-1" {
                    return Ok(FlushInterval(true));
                }
                Ok(FlushInterval(
                    !parse_duration(s).map_err(E::custom)?.is_zero(),
                ))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as 4096, \"64KiB\" or \"1MB\"")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Size, E> {
                Ok(Size(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Size, E> {
                match u64::try_from(n) {
                    Ok(n) => Ok(Size(n)),
                    Err(_) => Err(E::custom(format!("invalid size {n} (cannot be negative)"))),
                }
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Size, E> {
                parse_size(s).map(Size).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

const UNITS: &str = "ns, us, ms, s, m, h or d";

/// `"250ms"`, `"1m30s"`, `"1.5h"`, `"0"`; units ns us ms s m h d.
pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let invalid =
        || format!("invalid duration \"{s}\" (expected e.g. \"250ms\", \"5s\", \"1m30s\")");
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if t.is_empty() {
        return Err(invalid());
    }
    let mut rest = t;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(n);
        let u = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(u);
        if number.is_empty() {
            return Err(invalid());
        }
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            "" => return Err(format!("duration \"{s}\" needs a unit ({UNITS})")),
            _ => {
                let why = format!("unknown unit \"{unit}\" (expected {UNITS})");
                return Err(format!("invalid duration \"{s}\": {why}"));
            }
        };
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(invalid());
        }
        let too_large = || format!("invalid duration \"{s}\" (too large)");
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| too_large())?
        };
        // 18 fraction digits are more precision than nanoseconds need and cannot overflow.
        let frac = &frac[..frac.len().min(18)];
        let frac_ns = if frac.is_empty() {
            0
        } else {
            frac.parse::<u128>().map_err(|_| invalid())? * unit_ns / 10u128.pow(frac.len() as u32)
        };
        total = whole
            .checked_mul(unit_ns)
            .and_then(|w| w.checked_add(frac_ns))
            .and_then(|v| v.checked_add(total))
            .ok_or_else(too_large)?;
        rest = next;
    }
    u64::try_from(total)
        .map(Duration::from_nanos)
        .map_err(|_| format!("invalid duration \"{s}\" (too large)"))
}

/// `4096`, `"64KiB"` (1024-based), `"4KB"` (1000-based), `"10B"`.
pub(super) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let n = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(n);
    let invalid =
        || format!("invalid size \"{s}\" (expected e.g. 4096, \"64KiB\", \"1MiB\", \"4KB\")");
    if number.is_empty() {
        return Err(invalid());
    }
    let multiplier: u64 = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => {
            return Err(format!(
            "invalid size \"{s}\": unknown unit \"{}\" (expected B, KB, MB, GB, KiB, MiB or GiB)",
            unit.trim_start()
        ))
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|v| v.checked_mul(multiplier))
        .ok_or_else(|| format!("invalid size \"{s}\" (too large)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;
    use crate::config::*;

    #[test]
    fn bad_duration_is_reported_with_its_line() {
        let e = assert_err(
            r#"
            workers: 1
            limits:
              idle_timeout: 5 minutes
            "#,
            3,
            "limits.idle_timeout",
            "invalid duration \"5 minutes\"",
        );
        assert_eq!(e.column, 17);
        let e = upstream_err("lb:\n  try_interval: 10x\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (9, "upstreams.api.lb.try_interval"),
            "{e}"
        );
        assert!(e.message.contains("unknown unit \"x\""), "{e}");
    }

    #[test]
    fn bare_nonzero_integer_duration_needs_a_unit() {
        assert_err(
            "shutdown_timeout: 30\n",
            1,
            "shutdown_timeout",
            "needs a unit",
        );
        assert_err("shutdown_timeout: -5\n", 1, "shutdown_timeout", "negative");
        assert_err(
            "shutdown_timeout: \"30\"\n",
            1,
            "shutdown_timeout",
            "needs a unit",
        );
    }

    #[test]
    fn durations_parse_units_fractions_and_concatenations() {
        let d = |s| parse_duration(s).unwrap();
        assert_eq!(d("250ms"), Duration::from_millis(250));
        assert_eq!(d("5s"), Duration::from_secs(5));
        assert_eq!(d("1m30s"), Duration::from_secs(90));
        assert_eq!(d("2h"), Duration::from_secs(7200));
        assert_eq!(d("1d"), Duration::from_secs(86400));
        assert_eq!(d("1h2m3s4ms5us6ns"), Duration::new(3723, 4_005_006));
        assert_eq!(d("1.5s"), Duration::from_millis(1500));
        assert_eq!(d(".5ms"), Duration::from_micros(500));
        assert_eq!(d("0"), Duration::ZERO);
        assert_eq!(d("0s"), Duration::ZERO);
        for bad in [
            "",
            "s",
            "5",
            "5x",
            "1m30",
            "-1s",
            "1..5s",
            "5 s",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn zero_durations_mean_off() {
        let c = ok(r#"
            limits: { header_read_timeout: 0, idle_timeout: "0s" }
            listeners: [{ listen: "127.0.0.1:1", routes: [{ respond: {} }] }]
        "#);
        assert_eq!(c.limits.header_read_timeout, None);
        assert_eq!(c.limits.idle_timeout, None);
        let c = Config::parse(
            &with_upstream("transport: { dial_timeout: 0, idle_timeout: 0s }"),
            "t",
        )
        .unwrap();
        assert_eq!(c.upstreams[0].transport.dial_timeout, None);
        assert_eq!(c.upstreams[0].transport.idle_timeout, None);
    }

    #[test]
    fn sizes_parse_binary_and_decimal_units() {
        let s = |v| parse_size(v).unwrap();
        assert_eq!(s("4096"), 4096);
        assert_eq!(s("10B"), 10);
        assert_eq!(s("64KiB"), 65536);
        assert_eq!(s("1MiB"), 1 << 20);
        assert_eq!(s("1GiB"), 1 << 30);
        assert_eq!(s("4KB"), 4000);
        assert_eq!(s("1MB"), 1_000_000);
        assert_eq!(s("2 kib"), 2048);
        for bad in ["", "KiB", "4XB", "1.5MiB", "-1", "99999999999999TiB"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_size_is_reported_with_its_line() {
        let e = assert_err(
            r#"
            limits:
              max_uri_bytes: 8KiB
              max_header_bytes: 64kibibytes
            "#,
            3,
            "limits.max_header_bytes",
            "invalid size \"64kibibytes\"",
        );
        assert_eq!(e.column, 21);
        assert_err(
            "limits: { max_request_body: -1 }\n",
            1,
            "limits.max_request_body",
            "negative",
        );
    }
}

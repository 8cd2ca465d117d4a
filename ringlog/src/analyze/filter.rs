//! `--where` filters: comma-separated conditions that must all hold, e.g.
//! `route=orders,status>=500,total>10ms,endpoint!=10.0.3.7:8080`.
//!
//! A condition is `FIELD OP VALUE` with OP one of `=`, `!=`, `>`, `>=`, `<`,
//! `<=`. FIELD is a [`Dim`] or `total` (duration). `=` and `!=` take
//! alternatives separated by `|`. Names (route, cluster, endpoint, type,
//! worker) are resolved to ids by the caller's lookup, once, up front.

use thiserror::Error;

use super::Dim;
use crate::record::{Reason, Record};

/// A `--where` expression that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FilterError {
    /// No operator in a condition.
    #[error("condition `{0}`: expected FIELD=VALUE, FIELD!=VALUE, FIELD>=VALUE ...")]
    NoOperator(String),
    /// Unknown field.
    #[error(
        "condition `{0}`: unknown field (route, cluster, endpoint, type, arm, worker, status, reason, generation, phase, total)"
    )]
    UnknownField(String),
    /// A value that does not parse for its field.
    #[error("condition `{cond}`: {why}")]
    BadValue {
        /// The condition.
        cond: String,
        /// What is wrong.
        why: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    Dim(Dim),
    Total,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Cond {
    field: Field,
    op: Op,
    /// Ids for = and != (any of them), else one number.
    values: Vec<u64>,
}

/// A parsed filter; the empty filter keeps everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    conds: Vec<Cond>,
}

impl Filter {
    /// Parses `expr`. `lookup(dim, name)` returns the ids a name has in the
    /// ring's name table (empty if none: the condition then matches nothing
    /// for `=`, everything for `!=`).
    pub fn parse(
        expr: &str,
        lookup: &dyn Fn(Dim, &str) -> Vec<u64>,
    ) -> Result<Filter, FilterError> {
        let mut conds = Vec::new();
        for raw in expr.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            conds.push(parse_cond(raw, lookup)?);
        }
        Ok(Filter { conds })
    }

    /// True if there are no conditions.
    pub fn is_empty(&self) -> bool {
        self.conds.is_empty()
    }

    /// Whether record `r` of worker `shard` passes every condition.
    #[inline]
    pub fn keep(&self, r: &Record, shard: u32) -> bool {
        self.conds.iter().all(|c| {
            let v = match c.field {
                Field::Dim(d) => d.value(r, shard),
                Field::Total => r.total_ns,
            };
            let first = c.values.first().copied().unwrap_or(0);
            match c.op {
                Op::Eq => c.values.contains(&v),
                Op::Ne => !c.values.contains(&v),
                Op::Gt => v > first,
                Op::Ge => v >= first,
                Op::Lt => v < first,
                Op::Le => v <= first,
            }
        })
    }
}

fn parse_cond(raw: &str, lookup: &dyn Fn(Dim, &str) -> Vec<u64>) -> Result<Cond, FilterError> {
    let ops = [
        ("!=", Op::Ne),
        (">=", Op::Ge),
        ("<=", Op::Le),
        ("=", Op::Eq),
        (">", Op::Gt),
        ("<", Op::Lt),
    ];
    let (at, len, op) = ops
        .iter()
        .filter_map(|(s, op)| raw.find(s).map(|i| (i, s.len(), *op)))
        .min_by_key(|(i, len, _)| (*i, usize::MAX - len))
        .ok_or_else(|| FilterError::NoOperator(raw.to_string()))?;
    let (name, value) = (raw[..at].trim(), raw[at + len..].trim());
    let field = match name {
        "total" | "latency" | "duration" => Field::Total,
        n => Field::Dim(Dim::parse(n).ok_or_else(|| FilterError::UnknownField(raw.to_string()))?),
    };
    let bad = |why: &str| FilterError::BadValue {
        cond: raw.to_string(),
        why: why.to_string(),
    };
    let ordered = !matches!(op, Op::Eq | Op::Ne);
    let values = match field {
        Field::Total => {
            vec![crate::units::parse_duration_ns(value).map_err(|e| bad(&e.to_string()))?]
        }
        Field::Dim(d) => {
            let mut out = Vec::new();
            for alt in value.split('|').map(str::trim) {
                out.extend(dim_value(d, alt, lookup).map_err(|w| bad(&w))?);
            }
            if ordered && out.len() != 1 {
                return Err(bad("an ordering needs one numeric value"));
            }
            out
        }
    };
    Ok(Cond { field, op, values })
}

fn dim_value(d: Dim, v: &str, lookup: &dyn Fn(Dim, &str) -> Vec<u64>) -> Result<Vec<u64>, String> {
    match d {
        Dim::Status | Dim::Generation => v
            .parse::<u64>()
            .map(|n| vec![n])
            .map_err(|_| format!("`{v}` is not a number")),
        Dim::Reason => (0..=255u8)
            .map(Reason::from_code)
            .find(|r| r.name() == v)
            .map(|r| vec![u64::from(r.code())])
            .ok_or_else(|| format!("`{v}` is not a reason code name")),
        Dim::Policy => super::POLICY_NAMES
            .iter()
            .position(|n| *n == v)
            .map(|i| vec![i as u64])
            .ok_or_else(|| format!("`{v}` is not a policy ({})", super::POLICY_NAMES.join(", "))),
        Dim::Phase => crate::record::Phase::ALL
            .iter()
            .position(|p| p.name() == v)
            .map(|i| vec![i as u64])
            .ok_or_else(|| {
                format!("`{v}` is not a phase (queue, connect, tls, first_byte, transfer, write)")
            }),
        Dim::Arm => {
            if v == "none" {
                return Ok(vec![0]);
            }
            let (route, n) = v
                .rsplit_once("/arm")
                .and_then(|(r, n)| {
                    Some((r, n.parse::<u64>().ok().filter(|n| (1..16).contains(n))?))
                })
                .ok_or_else(|| format!("`{v}` is not an arm (ROUTE/armN, N 1-15, or none)"))?;
            Ok(lookup(Dim::Route, route)
                .into_iter()
                .map(|r| r << 8 | n)
                .collect())
        }
        Dim::Worker => Ok(match v.parse::<u64>() {
            Ok(n) => vec![n],
            Err(_) => lookup(d, v),
        }),
        _ => Ok(lookup(d, v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(d: Dim, n: &str) -> Vec<u64> {
        match (d, n) {
            (Dim::Route, "orders") => vec![3, 7],
            (Dim::Endpoint, "a") => vec![1],
            _ => vec![],
        }
    }

    fn rec(route: u16, status: u16, total: u64) -> Record {
        Record {
            route,
            status,
            total_ns: total,
            ..Record::default()
        }
    }

    #[test]
    fn conditions_all_hold() {
        let f = Filter::parse("route=orders, status>=500,total>10ms", &lookup).unwrap();
        assert!(f.keep(&rec(7, 503, 11_000_000), 0));
        assert!(!f.keep(&rec(7, 200, 11_000_000), 0));
        assert!(!f.keep(&rec(2, 503, 11_000_000), 0));
        assert!(!f.keep(&rec(3, 503, 10_000_000), 0));
        let ne = Filter::parse("route!=orders|nothing", &lookup).unwrap();
        assert!(ne.keep(&rec(2, 0, 0), 0) && !ne.keep(&rec(3, 0, 0), 0));
        assert!(Filter::parse("", &lookup).unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_condition() {
        assert!(matches!(
            Filter::parse("route", &lookup),
            Err(FilterError::NoOperator(_))
        ));
        assert!(matches!(
            Filter::parse("colour=red", &lookup),
            Err(FilterError::UnknownField(_))
        ));
        let e = Filter::parse("status>=abc", &lookup).unwrap_err();
        assert!(e.to_string().contains("status>=abc"), "{e}");
        assert!(Filter::parse("route>orders", &lookup).is_err());
        assert!(Filter::parse("phase=nap", &lookup).is_err());
    }
}

//! DataFusion filter expressions to the Firn scan filter (used to skip files).
//!
//! Only what can be translated exactly is sent; the rest is left to DataFusion. The server
//! only prunes files, so DataFusion always applies every filter to the rows again
//! (`Inexact` pushdown).

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};
use firn_client::proto as pb;
use pb::comparison::Op;
use pb::filter::Kind;

/// The conjunction of whatever part of `filters` can be translated.
pub(crate) fn to_proto(filters: &[Expr]) -> Option<pb::Filter> {
    let mut parts: Vec<pb::Filter> = filters.iter().filter_map(translate).collect();
    match parts.len() {
        0 => None,
        1 => parts.pop(),
        _ => Some(node(Kind::And(pb::FilterList { filters: parts }))),
    }
}

/// Whether `e` is (partly) useful to the server.
pub(crate) fn translatable(e: &Expr) -> bool {
    translate(e).is_some()
}

fn node(kind: Kind) -> pb::Filter {
    pb::Filter { kind: Some(kind) }
}

fn translate(e: &Expr) -> Option<pb::Filter> {
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
            Operator::And => {
                // Half of a conjunction still prunes.
                match (translate(left), translate(right)) {
                    (Some(l), Some(r)) => Some(node(Kind::And(pb::FilterList {
                        filters: vec![l, r],
                    }))),
                    (Some(x), None) | (None, Some(x)) => Some(x),
                    (None, None) => None,
                }
            }
            Operator::Or => Some(node(Kind::Or(pb::FilterList {
                filters: vec![translate(left)?, translate(right)?],
            }))),
            _ => compare(left, *op, right),
        },
        Expr::IsNull(inner) => Some(node(Kind::IsNull(column(inner)?))),
        Expr::IsNotNull(inner) => Some(node(Kind::IsNotNull(column(inner)?))),
        Expr::Not(inner) => Some(node(Kind::Not(Box::new(translate(inner)?)))),
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) => Some(node(Kind::And(pb::FilterList {
            filters: vec![
                compare(expr, Operator::GtEq, low)?,
                compare(expr, Operator::LtEq, high)?,
            ],
        }))),
        Expr::InList(l) if !l.negated => {
            let values = l.list.iter().map(literal_of).collect::<Option<Vec<_>>>()?;
            Some(node(Kind::InList(pb::InList {
                column: column(&l.expr)?,
                values,
            })))
        }
        _ => None,
    }
}

fn compare(left: &Expr, op: Operator, right: &Expr) -> Option<pb::Filter> {
    let (col, op, lit) = match (column(left), column(right)) {
        (Some(c), None) => (c, op, literal_of(right)?),
        (None, Some(c)) => (c, op.swap()?, literal_of(left)?),
        _ => return None,
    };
    let op = match op {
        Operator::Eq => Op::Eq,
        Operator::NotEq => Op::NotEq,
        Operator::Lt => Op::Lt,
        Operator::LtEq => Op::LtEq,
        Operator::Gt => Op::Gt,
        Operator::GtEq => Op::GtEq,
        _ => return None,
    };
    Some(node(Kind::Compare(pb::Comparison {
        column: col,
        op: op as i32,
        value: Some(lit),
    })))
}

fn column(e: &Expr) -> Option<String> {
    match e {
        Expr::Column(c) => Some(c.name.clone()),
        // A cast of a column to a wider type keeps the order of its values only for some
        // types; be conservative and do not look through casts.
        _ => None,
    }
}

fn literal_of(e: &Expr) -> Option<pb::Literal> {
    let Expr::Literal(v, _) = e else {
        return None;
    };
    use pb::literal::Value as V;
    let value = match v {
        ScalarValue::Boolean(Some(b)) => V::Boolean(*b),
        ScalarValue::Int8(Some(x)) => V::Long(*x as i64),
        ScalarValue::Int16(Some(x)) => V::Long(*x as i64),
        ScalarValue::Int32(Some(x)) => V::Long(*x as i64),
        ScalarValue::Int64(Some(x)) => V::Long(*x),
        ScalarValue::UInt8(Some(x)) => V::Long(*x as i64),
        ScalarValue::UInt16(Some(x)) => V::Long(*x as i64),
        ScalarValue::UInt32(Some(x)) => V::Long(*x as i64),
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => V::String(s.clone()),
        ScalarValue::Date32(Some(d)) => V::Date(*d),
        ScalarValue::TimestampMicrosecond(Some(t), None) => V::TimestampMicros(*t),
        ScalarValue::TimestampMicrosecond(Some(t), Some(_)) => V::TimestamptzMicros(*t),
        ScalarValue::TimestampMillisecond(Some(t), tz) => {
            let us = t.checked_mul(1000)?;
            if tz.is_some() {
                V::TimestamptzMicros(us)
            } else {
                V::TimestampMicros(us)
            }
        }
        ScalarValue::TimestampSecond(Some(t), tz) => {
            let us = t.checked_mul(1_000_000)?;
            if tz.is_some() {
                V::TimestamptzMicros(us)
            } else {
                V::TimestampMicros(us)
            }
        }
        ScalarValue::TimestampNanosecond(Some(t), tz) if t % 1000 == 0 => {
            if tz.is_some() {
                V::TimestamptzMicros(t / 1000)
            } else {
                V::TimestampMicros(t / 1000)
            }
        }
        // Floats are never used for pruning by the server; other types are not translated.
        _ => return None,
    };
    Some(pb::Literal { value: Some(value) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    #[test]
    fn translates_what_it_can_and_keeps_conjunction_halves() {
        let f = to_proto(&[col("id").gt(lit(5i64)).and(col("name").like(lit("a%")))]).unwrap();
        let Some(Kind::Compare(c)) = f.kind else {
            panic!("{f:?}")
        };
        assert_eq!(c.column, "id");
        assert_eq!(c.op, Op::Gt as i32);
        // literal on the left: the operator is mirrored
        let f = to_proto(&[lit(5i64).lt(col("id"))]).unwrap();
        let Some(Kind::Compare(c)) = f.kind else {
            panic!()
        };
        assert_eq!(c.op, Op::Gt as i32);
        // an OR with an untranslatable arm cannot prune at all
        assert!(to_proto(&[col("id").eq(lit(1i64)).or(col("name").like(lit("a%")))]).is_none());
        assert!(to_proto(&[col("x").eq(col("y"))]).is_none());
        let f = to_proto(&[
            col("a").is_null(),
            col("b").in_list(vec![lit(1i32), lit(2i32)], false),
        ])
        .unwrap();
        assert!(matches!(f.kind, Some(Kind::And(l)) if l.filters.len() == 2));
    }
}

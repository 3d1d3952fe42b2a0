//! Encoding of transactions into Redis hashes, and decoding of script
//! replies. The reply code table is the same as `lua/README.md`.

use redis::Value;

use crate::domain::{
    Branch, BranchStatus, GlobalStatus, Op, TraceContext, Trans, TransKind, TransOptions,
};

/// The first element of every script reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptCode {
    /// Done.
    Ok = 1,
    /// The gid is taken.
    Exists = 2,
    /// No such transaction.
    NotFound = 3,
    /// The status is not the expected one.
    Conflict = 4,
    /// The lease was taken over.
    StaleEpoch = 5,
    /// A branch row is missing or not in its expected status.
    BranchConflict = 6,
    /// The transaction is of another kind.
    KindConflict = 7,
    /// A limit of one transaction would be passed.
    Limit = 8,
}

impl ScriptCode {
    /// Every code.
    pub const ALL: [ScriptCode; 8] = [
        Self::Ok,
        Self::Exists,
        Self::NotFound,
        Self::Conflict,
        Self::StaleEpoch,
        Self::BranchConflict,
        Self::KindConflict,
        Self::Limit,
    ];

    /// The name used in `lua/README.md` and the scripts.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Exists => "EXISTS",
            Self::NotFound => "NOT_FOUND",
            Self::Conflict => "CONFLICT",
            Self::StaleEpoch => "STALE_EPOCH",
            Self::BranchConflict => "BRANCH_CONFLICT",
            Self::KindConflict => "KIND_CONFLICT",
            Self::Limit => "LIMIT",
        }
    }

    /// The code for a reply's first element.
    pub fn from_code(code: i64) -> Option<Self> {
        Self::ALL.into_iter().find(|c| *c as i64 == code)
    }
}

/// A reply that does not have the documented shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected reply from Redis: {0}")]
pub struct DecodeError(pub String);

fn bad(what: impl Into<String>) -> DecodeError {
    DecodeError(what.into())
}

/// The text of a string-like reply element.
pub fn text(v: &Value) -> Result<String, DecodeError> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).map_err(|_| bad("non-UTF-8 string")),
        Value::SimpleString(s) => Ok(s.clone()),
        Value::Int(n) => Ok(n.to_string()),
        Value::Okay => Ok("OK".into()),
        other => Err(bad(format!("expected a string, got {other:?}"))),
    }
}

/// The integer of an integer-like reply element.
pub fn int(v: &Value) -> Result<i64, DecodeError> {
    match v {
        Value::Int(n) => Ok(*n),
        Value::BulkString(_) | Value::SimpleString(_) => {
            text(v)?.parse().map_err(|_| bad("expected an integer"))
        }
        other => Err(bad(format!("expected an integer, got {other:?}"))),
    }
}

/// The elements of an array reply.
pub fn array(v: &Value) -> Result<&[Value], DecodeError> {
    match v {
        Value::Array(items) => Ok(items),
        other => Err(bad(format!("expected an array, got {other:?}"))),
    }
}

/// Splits a script reply into its code and the rest.
pub fn split_reply(v: &Value) -> Result<(ScriptCode, &[Value]), DecodeError> {
    let items = array(v)?;
    let first = items.first().ok_or_else(|| bad("empty reply"))?;
    let code = int(first)?;
    let code = ScriptCode::from_code(code).ok_or_else(|| bad(format!("unknown code {code}")))?;
    Ok((code, &items[1..]))
}

/// Field/value pairs of the trans hash of a new transaction.
pub fn trans_fields(t: &Trans, epoch: u64) -> Vec<(&'static str, String)> {
    let mut f = vec![
        ("status", t.status.as_str().to_owned()),
        ("kind", t.kind.as_str().to_owned()),
        ("epoch", epoch.to_string()),
        ("owner", t.owner.clone()),
        ("create_ms", t.create_ms.to_string()),
        ("update_ms", t.update_ms.to_string()),
    ];
    // the payload budget that register_branch checks; the rows of other
    // kinds are all given here, bounded before they are written
    if t.kind.registers_branches() {
        f.push(("bytes", t.payload_bytes().to_string()));
    }
    if let Some(n) = t.next_ms {
        f.push(("next_ms", n.to_string()));
    }
    if let Some(trace) = &t.trace {
        f.push(("trace", trace.encode()));
    }
    if !t.opts.is_default() {
        // serialising a struct of plain fields and a string map cannot fail
        f.push(("opts", serde_json::to_string(&t.opts).unwrap_or_default()));
    }
    for (name, value) in [
        ("custom_data", &t.custom_data),
        ("query_prepared", &t.query_prepared),
        ("protocol", &t.protocol),
        ("reason", &t.reason),
        ("result", &t.result),
    ] {
        if !value.is_empty() {
            f.push((name, value.clone()));
        }
    }
    f
}

/// The value of a branch row of a transaction created at `create_ms`:
/// `<status>\t<ms since creation>\t<seq>\t<url>\t<data>`. The time is kept
/// relative so a typical row stays short enough for Redis's compact hash
/// encoding.
pub fn branch_row(b: &Branch, create_ms: u64) -> Vec<u8> {
    let mut row = format!(
        "{}\t{}\t{}\t{}\t",
        b.status.as_str(),
        b.update_ms.saturating_sub(create_ms),
        b.seq,
        b.url,
    )
    .into_bytes();
    row.extend_from_slice(&b.data);
    row
}

/// A row without its time and position, for `register_branch.lua`, which
/// adds both: `(status, tail)` with value = status, time, seq, tail.
pub fn branch_row_parts(b: &Branch) -> (String, Vec<u8>) {
    let mut tail = format!("\t{}\t", b.url).into_bytes();
    tail.extend_from_slice(&b.data);
    (b.status.as_str().to_owned(), tail)
}

/// Decodes one branch row from its field and value, for a transaction
/// created at `create_ms`.
pub fn decode_branch(field: &str, value: &[u8], create_ms: u64) -> Result<Branch, DecodeError> {
    let (id, op) = field
        .rsplit_once(':')
        .ok_or_else(|| bad(format!("branch field {field:?}")))?;
    let op = Op::parse(op).ok_or_else(|| bad(format!("branch op in {field:?}")))?;
    // four text parts, then the data as the bytes they are
    let mut parts = value.splitn(5, |b| *b == b'\t');
    let mut next = || {
        parts
            .next()
            .ok_or_else(|| bad(format!("branch row {field:?}")))
    };
    let mut text_part = || -> Result<&str, DecodeError> {
        std::str::from_utf8(next()?).map_err(|_| bad(format!("branch row {field:?}")))
    };
    let status = text_part()?;
    let status =
        BranchStatus::parse(status).ok_or_else(|| bad(format!("branch status {status:?}")))?;
    let since: u64 = text_part()?.parse().map_err(|_| bad("branch time"))?;
    let update_ms = create_ms.saturating_add(since);
    let seq = text_part()?.parse().map_err(|_| bad("branch seq"))?;
    let url = text_part()?.to_owned();
    let data = next()?.to_vec();
    Ok(Branch {
        id: id.to_owned(),
        op,
        url,
        data,
        status,
        seq,
        update_ms,
    })
}

/// Decodes a transaction from the HGETALL replies of its two hashes;
/// returns it with its lease epoch.
pub fn decode_trans(
    gid: &str,
    trans: &Value,
    branches: &Value,
) -> Result<(Trans, u64), DecodeError> {
    let mut t = Trans {
        gid: gid.to_owned(),
        kind: TransKind::Saga,
        status: GlobalStatus::Prepared,
        create_ms: 0,
        update_ms: 0,
        finish_ms: None,
        rollback_ms: None,
        next_ms: None,
        attempt: 0,
        reason: String::new(),
        opts: TransOptions::default(),
        custom_data: String::new(),
        query_prepared: String::new(),
        protocol: String::new(),
        result: String::new(),
        owner: String::new(),
        last_error: String::new(),
        last_branch: String::new(),
        trace: None,
        branches: Vec::new(),
    };
    let mut epoch = 0;
    let (mut has_kind, mut has_status) = (false, false);
    let num = |v: &str, what: &str| -> Result<u64, DecodeError> {
        v.parse().map_err(|_| bad(format!("{what} {v:?}")))
    };
    for (field, value) in pairs(trans)? {
        match field.as_str() {
            "status" => {
                t.status =
                    GlobalStatus::parse(&value).ok_or_else(|| bad(format!("status {value:?}")))?;
                has_status = true;
            }
            "kind" => {
                t.kind = TransKind::parse(&value).ok_or_else(|| bad(format!("kind {value:?}")))?;
                has_kind = true;
            }
            "epoch" => epoch = num(&value, "epoch")?,
            "owner" => t.owner = value,
            "create_ms" => t.create_ms = num(&value, "create_ms")?,
            "update_ms" => t.update_ms = num(&value, "update_ms")?,
            "finish_ms" => t.finish_ms = Some(num(&value, "finish_ms")?),
            "rollback_ms" => t.rollback_ms = Some(num(&value, "rollback_ms")?),
            "next_ms" => t.next_ms = Some(num(&value, "next_ms")?),
            "attempt" => t.attempt = num(&value, "attempt")? as u32,
            "reason" => t.reason = value,
            "opts" => {
                t.opts = serde_json::from_str(&value).map_err(|e| bad(format!("opts: {e}")))?
            }
            "custom_data" => t.custom_data = value,
            "query_prepared" => t.query_prepared = value,
            "protocol" => t.protocol = value,
            "result" => t.result = value,
            "last_error" => t.last_error = value,
            "last_branch" => t.last_branch = value,
            "trace" => t.trace = Some(TraceContext::decode(&value)),
            _ => {}
        }
    }
    if !has_kind || !has_status {
        return Err(bad(format!("transaction {gid:?} has no status or kind")));
    }
    for (field, value) in byte_pairs(branches)? {
        t.branches.push(decode_branch(&field, &value, t.create_ms)?);
    }
    t.branches.sort_by_key(|b| b.seq);
    Ok((t, epoch))
}

/// The field/value pairs of an HGETALL reply (a flat array under RESP2, a
/// map under RESP3).
fn pairs(v: &Value) -> Result<Vec<(String, String)>, DecodeError> {
    match v {
        Value::Array(items) => {
            if items.len() % 2 != 0 {
                return Err(bad("odd hash reply"));
            }
            items
                .chunks(2)
                .map(|c| Ok((text(&c[0])?, text(&c[1])?)))
                .collect()
        }
        Value::Map(items) => items
            .iter()
            .map(|(k, v)| Ok((text(k)?, text(v)?)))
            .collect(),
        Value::Nil => Ok(Vec::new()),
        other => Err(bad(format!("expected a hash, got {other:?}"))),
    }
}

/// [`pairs`] with the values as bytes (branch rows hold payload bytes).
fn byte_pairs(v: &Value) -> Result<Vec<(String, Vec<u8>)>, DecodeError> {
    let value = |v: &Value| match v {
        Value::BulkString(b) => Ok(b.clone()),
        other => text(other).map(String::into_bytes),
    };
    match v {
        Value::Array(items) => {
            if items.len() % 2 != 0 {
                return Err(bad("odd hash reply"));
            }
            items
                .chunks(2)
                .map(|c| Ok((text(&c[0])?, value(&c[1])?)))
                .collect()
        }
        Value::Map(items) => items
            .iter()
            .map(|(k, v)| Ok((text(k)?, value(v)?)))
            .collect(),
        Value::Nil => Ok(Vec::new()),
        other => Err(bad(format!("expected a hash, got {other:?}"))),
    }
}

pub(crate) fn unexpected(script: &str, code: ScriptCode) -> crate::store::StoreError {
    crate::store::StoreError::Decode(DecodeError(format!(
        "{script} replied {} which it never should",
        code.name()
    )))
}
/// The first extra value of a script reply as text, "" when there is none.
pub(crate) fn first_text(rest: &[Value]) -> Result<String, DecodeError> {
    Ok(rest.first().map(text).transpose()?.unwrap_or_default())
}

/// The first extra value of a script reply as a status.
pub(crate) fn first_status(rest: &[Value]) -> Result<GlobalStatus, DecodeError> {
    let v = first_text(rest)?;
    GlobalStatus::parse(&v).ok_or_else(|| bad(format!("status {v:?}")))
}

/// The first extra value of a script reply as a kind.
pub(crate) fn first_kind(rest: &[Value]) -> Result<TransKind, DecodeError> {
    let v = first_text(rest)?;
    TransKind::parse(&v).ok_or_else(|| bad(format!("kind {v:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn every_code_round_trips_and_matches_the_lua_table() {
        let table = include_str!("../../lua/README.md");
        for code in ScriptCode::ALL {
            assert_eq!(ScriptCode::from_code(code as i64), Some(code));
            let row = format!("| {} | `{}` |", code as i64, code.name());
            assert!(table.contains(&row), "lua/README.md lacks {row}");
        }
        assert_eq!(ScriptCode::from_code(0), None);
        assert_eq!(ScriptCode::from_code(9), None);
    }

    #[test]
    fn scripts_bind_code_names_to_the_same_numbers() {
        for script in crate::store::scripts::SOURCES {
            let line = script
                .1
                .lines()
                .find(|l| l.starts_with("local OK"))
                .unwrap_or_else(|| panic!("{} binds no codes", script.0));
            let (names, values) = line["local ".len()..].split_once(" = ").unwrap();
            for (n, v) in names.split(", ").zip(values.split(", ")) {
                let c = ScriptCode::ALL.iter().find(|c| c.name() == n).unwrap();
                assert_eq!(
                    v.trim().parse::<i64>().unwrap(),
                    *c as i64,
                    "{n} in {}",
                    script.0
                );
            }
        }
    }

    #[test]
    fn branch_rows_round_trip_with_tabs_in_data() {
        let b = Branch {
            id: "01".into(),
            op: Op::Compensate,
            url: "http://h/x?y=1".into(),
            data: "{\"a\":\"t\\tb\"}\twith a raw tab".into(),
            status: BranchStatus::Succeed,
            seq: 4,
            update_ms: 17,
        };
        let back = decode_branch(&b.field(), &branch_row(&b, 10), 10).unwrap();
        assert_eq!(back, b);
        assert!(branch_row(&b, 10).starts_with(b"succeed\t7\t4\t"));
        let (status, tail) = branch_row_parts(&b);
        let mut joined = format!("{status}\t7\t{}", b.seq).into_bytes();
        joined.extend_from_slice(&tail);
        assert_eq!(joined, branch_row(&b, 10));
        // proto bytes are rarely text: any byte, tabs and invalid UTF-8
        // included, comes back as it went in
        let bin = Branch {
            data: vec![0x0a, 0x03, b'\t', 0xff, 0xfe, 0x00, 0x80],
            ..b
        };
        let back = decode_branch(&bin.field(), &branch_row(&bin, 10), 10).unwrap();
        assert_eq!(back, bin);
    }

    #[test]
    fn statuses_match_the_strings_the_scripts_compare() {
        // claim_due.lua skips finished transactions by these spellings
        let claim = include_str!("../../lua/claim_due.lua");
        assert!(claim.contains(&format!("'{}'", GlobalStatus::Succeed.as_str())));
        assert!(claim.contains(&format!("'{}'", GlobalStatus::Failed.as_str())));
        // register_branch.lua only adds rows to a prepared transaction
        let register = include_str!("../../lua/register_branch.lua");
        assert!(register.contains(&format!("'{}'", GlobalStatus::Prepared.as_str())));
    }

    #[test]
    fn decodes_a_transaction() {
        let trans = Value::Array(
            [
                "status",
                "aborting",
                "kind",
                "saga",
                "epoch",
                "3",
                "create_ms",
                "10",
                "update_ms",
                "11",
                "reason",
                "r",
                "opts",
                "{\"retry_limit\":2}",
            ]
            .iter()
            .map(|s| bulk(s))
            .collect(),
        );
        let branches = Value::Array(vec![
            bulk("01:action"),
            bulk("succeed\t1\t1\thttp://a\t{}"),
            bulk("01:compensate"),
            bulk("prepared\t0\t0\thttp://c\t{}"),
        ]);
        let (t, epoch) = decode_trans("g", &trans, &branches).unwrap();
        assert_eq!(epoch, 3);
        assert_eq!(t.status, GlobalStatus::Aborting);
        assert_eq!(t.opts.retry_limit, 2);
        assert_eq!(t.branches[0].op, Op::Compensate);
        assert_eq!(t.branches[1].status, BranchStatus::Succeed);
        assert!(decode_trans("g", &Value::Array(vec![]), &Value::Nil).is_err());
    }
}

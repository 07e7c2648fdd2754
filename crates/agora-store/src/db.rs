//! The SQL layer under the store's logic: one small API (statements, parameters, rows)
//! over both engines, so that the store's semantics (UIDs, MODSEQs, quotas, the
//! directory) are written once and run on SQLite or PostgreSQL alike. Statements are
//! written in the SQL both accept, with `?N` parameters; PostgreSQL gets them as `$N`.
//! Values cross as SQLite's five kinds; on PostgreSQL they are converted to the type
//! the server inferred for each parameter and read back from each column's type.

use std::cell::RefCell;
use std::collections::HashMap;

use tokio_postgres::types::{FromSql, IsNull, ToSql, Type};

use crate::{Result, StoreError};

/// One value, borrowed, as a parameter or a column.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ValueRef<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
}

/// What can be bound as a parameter.
pub(crate) trait ToValue {
    fn to_value(&self) -> ValueRef<'_>;
}

macro_rules! int_to_value {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> ValueRef<'_> {
                ValueRef::Int(*self as i64)
            }
        }
    )*};
}
int_to_value!(i64, i32, i16, u32, u16, u8, usize, u64);

impl ToValue for bool {
    fn to_value(&self) -> ValueRef<'_> {
        ValueRef::Int(i64::from(*self))
    }
}
impl ToValue for f64 {
    fn to_value(&self) -> ValueRef<'_> {
        ValueRef::Real(*self)
    }
}
impl ToValue for str {
    fn to_value(&self) -> ValueRef<'_> {
        ValueRef::Text(self)
    }
}
impl ToValue for String {
    fn to_value(&self) -> ValueRef<'_> {
        ValueRef::Text(self)
    }
}
impl ToValue for [u8] {
    fn to_value(&self) -> ValueRef<'_> {
        ValueRef::Blob(self)
    }
}
impl ToValue for Vec<u8> {
    fn to_value(&self) -> ValueRef<'_> {
        ValueRef::Blob(self)
    }
}
impl<const N: usize> ToValue for [u8; N] {
    fn to_value(&self) -> ValueRef<'_> {
        ValueRef::Blob(self)
    }
}
impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> ValueRef<'_> {
        self.as_ref().map_or(ValueRef::Null, ToValue::to_value)
    }
}
impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> ValueRef<'_> {
        (**self).to_value()
    }
}

/// A statement's parameters: `()`, an array of one type, or `params![…]`.
pub(crate) trait Params {
    fn values(&self) -> Vec<ValueRef<'_>>;
}

impl Params for () {
    fn values(&self) -> Vec<ValueRef<'_>> {
        Vec::new()
    }
}
impl<T: ToValue, const N: usize> Params for [T; N] {
    fn values(&self) -> Vec<ValueRef<'_>> {
        self.iter().map(ToValue::to_value).collect()
    }
}
impl Params for &[&dyn ToValue] {
    fn values(&self) -> Vec<ValueRef<'_>> {
        self.iter().map(|v| v.to_value()).collect()
    }
}
impl Params for Vec<&dyn ToValue> {
    fn values(&self) -> Vec<ValueRef<'_>> {
        self.iter().map(|v| v.to_value()).collect()
    }
}

/// Parameters of several types, in order.
macro_rules! params {
    ($($p:expr),* $(,)?) => {
        &[$(&$p as &dyn $crate::db::ToValue),*] as &[&dyn $crate::db::ToValue]
    };
}
pub(crate) use params;

/// What a column can be read as.
pub(crate) trait FromValue: Sized {
    fn from_value(v: ValueRef<'_>) -> Result<Self>;
}

fn kind(v: ValueRef<'_>) -> &'static str {
    match v {
        ValueRef::Null => "null",
        ValueRef::Int(_) => "integer",
        ValueRef::Real(_) => "real",
        ValueRef::Text(_) => "text",
        ValueRef::Blob(_) => "blob",
    }
}

fn wrong(v: ValueRef<'_>, want: &str) -> StoreError {
    StoreError::Corrupt(format!("a column holds {} where {want} was expected", kind(v)))
}

macro_rules! int_from_value {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(v: ValueRef<'_>) -> Result<Self> {
                match v {
                    ValueRef::Int(i) => <$t>::try_from(i).map_err(|_| StoreError::Corrupt(format!("{i} is out of range"))),
                    _ => Err(wrong(v, "an integer")),
                }
            }
        }
    )*};
}
int_from_value!(i64, i32, u32, u16, u8, usize, u64);

impl FromValue for bool {
    fn from_value(v: ValueRef<'_>) -> Result<Self> {
        match v {
            ValueRef::Int(i) => Ok(i != 0),
            _ => Err(wrong(v, "a boolean")),
        }
    }
}
impl FromValue for f64 {
    fn from_value(v: ValueRef<'_>) -> Result<Self> {
        match v {
            ValueRef::Real(f) => Ok(f),
            ValueRef::Int(i) => Ok(i as f64),
            _ => Err(wrong(v, "a number")),
        }
    }
}
impl FromValue for String {
    fn from_value(v: ValueRef<'_>) -> Result<Self> {
        match v {
            ValueRef::Text(s) => Ok(s.to_string()),
            _ => Err(wrong(v, "text")),
        }
    }
}
impl FromValue for Vec<u8> {
    fn from_value(v: ValueRef<'_>) -> Result<Self> {
        match v {
            ValueRef::Blob(b) => Ok(b.to_vec()),
            ValueRef::Text(s) => Ok(s.as_bytes().to_vec()),
            _ => Err(wrong(v, "a blob")),
        }
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: ValueRef<'_>) -> Result<Self> {
        match v {
            ValueRef::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// `query_row`'s "no row" as None.
pub(crate) trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(StoreError::NoRow) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// One connection of either engine.
pub(crate) struct Db(Engine);

enum Engine {
    Lite(rusqlite::Connection),
    Pg(PgConn),
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_pg() { "Db(postgres)" } else { "Db(sqlite)" })
    }
}

/// A PostgreSQL connection used from a blocking thread. It has a small runtime of its
/// own that drives its socket on whichever thread is waiting for an answer, so that a
/// statement costs one round trip to the server and no hand-off between threads.
pub(crate) struct PgConn {
    pub(crate) client: tokio_postgres::Client,
    rt: Option<tokio::runtime::Runtime>,
    statements: RefCell<HashMap<String, tokio_postgres::Statement>>,
}

impl PgConn {
    /// Connects with `config`, over TLS unless its `sslmode` is `disable` (blocking: not
    /// on an async thread).
    pub(crate) fn connect(config: &tokio_postgres::Config, tls: &crate::pgtls::MakeRustls) -> Result<PgConn> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let client = if config.get_ssl_mode() == tokio_postgres::config::SslMode::Disable {
            let (client, conn) = rt.block_on(config.connect(tokio_postgres::NoTls))?;
            rt.spawn(async move {
                if let Err(e) = conn.await {
                    tracing::warn!("store: PostgreSQL connection: {e}");
                }
            });
            client
        } else {
            let (client, conn) = rt.block_on(config.connect(tls.clone()))?;
            rt.spawn(async move {
                if let Err(e) = conn.await {
                    tracing::warn!("store: PostgreSQL connection: {e}");
                }
            });
            client
        };
        Ok(PgConn { client, rt: Some(rt), statements: RefCell::new(HashMap::new()) })
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> Result<F::Output> {
        match &self.rt {
            Some(rt) => Ok(rt.block_on(f)),
            None => Err(StoreError::Closed),
        }
    }

    fn statement(&self, sql: &str) -> Result<tokio_postgres::Statement> {
        if let Some(s) = self.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let st = self.block_on(self.client.prepare(&pg_sql(sql)))?.map_err(|e| match StoreError::from(e) {
            // A statement PostgreSQL cannot take is a bug here: name it.
            StoreError::Db(m) => {
                StoreError::Db(format!("{m} in: {}", sql.split_whitespace().collect::<Vec<_>>().join(" ")))
            }
            other => other,
        })?;
        let mut cache = self.statements.borrow_mut();
        // A bound on the cache: statements built with format! vary (column lists).
        if cache.len() >= 1024 {
            cache.clear();
        }
        cache.insert(sql.to_string(), st.clone());
        Ok(st)
    }

    fn run(&self, st: &tokio_postgres::Statement, values: &[ValueRef<'_>]) -> Result<Vec<tokio_postgres::Row>> {
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        Ok(self.block_on(self.client.query(st, &refs))??)
    }

    fn execute(&self, st: &tokio_postgres::Statement, values: &[ValueRef<'_>]) -> Result<usize> {
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        Ok(self.block_on(self.client.execute(st, &refs))?? as usize)
    }

    pub(crate) fn batch(&self, sql: &str) -> Result<()> {
        Ok(self.block_on(self.client.batch_execute(sql))??)
    }
}

/// SQLite has no row locks (its one writer holds the whole database): a trailing
/// `FOR UPDATE`, which takes the row on PostgreSQL, is dropped.
fn lite_sql(sql: &str) -> std::borrow::Cow<'_, str> {
    match sql.trim_end().strip_suffix("FOR UPDATE") {
        Some(rest) => std::borrow::Cow::Owned(rest.to_string()),
        None => std::borrow::Cow::Borrowed(sql),
    }
}

impl Drop for PgConn {
    fn drop(&mut self) {
        // Without waiting: a connection may be let go of on an async thread.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// `?N` (and bare `?`) parameters as PostgreSQL's `$N`, outside quoted text.
pub(crate) fn pg_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    let mut bare = 0;
    while let Some(ch) = chars.next() {
        match (quote, ch) {
            (Some(q), c) if c == q => {
                quote = None;
                out.push(c);
            }
            (Some(_), c) => out.push(c),
            (None, '\'' | '"') => {
                quote = Some(ch);
                out.push(ch);
            }
            (None, '?') => {
                out.push('$');
                if chars.peek().is_some_and(char::is_ascii_digit) {
                    while let Some(d) = chars.next_if(char::is_ascii_digit) {
                        out.push(d);
                    }
                } else {
                    bare += 1;
                    out.push_str(&bare.to_string());
                }
            }
            (None, c) => out.push(c),
        }
    }
    out
}

impl Db {
    pub(crate) fn sqlite(conn: rusqlite::Connection) -> Db {
        Db(Engine::Lite(conn))
    }

    pub(crate) fn postgres(conn: PgConn) -> Db {
        Db(Engine::Pg(conn))
    }

    pub(crate) fn pg(&self) -> Option<&PgConn> {
        match &self.0 {
            Engine::Pg(c) => Some(c),
            Engine::Lite(_) => None,
        }
    }

    pub(crate) fn is_pg(&self) -> bool {
        matches!(self.0, Engine::Pg(_))
    }

    pub(crate) fn prepare_cached(&self, sql: &str) -> Result<Stmt<'_>> {
        match &self.0 {
            Engine::Lite(c) => Ok(Stmt::Lite(c.prepare_cached(&lite_sql(sql))?)),
            Engine::Pg(p) => Ok(Stmt::Pg(p, p.statement(sql)?)),
        }
    }

    /// A statement used once (made with `format!`): not kept in SQLite's cache.
    pub(crate) fn prepare(&self, sql: &str) -> Result<Stmt<'_>> {
        match &self.0 {
            Engine::Lite(c) => Ok(Stmt::LiteOnce(c.prepare(&lite_sql(sql))?)),
            Engine::Pg(p) => Ok(Stmt::Pg(p, p.statement(sql)?)),
        }
    }

    pub(crate) fn execute(&self, sql: &str, params: impl Params) -> Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    pub(crate) fn query_row<T>(
        &self,
        sql: &str,
        params: impl Params,
        f: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }

    /// Runs `f` in one read transaction, so that its queries see one snapshot.
    pub(crate) fn snapshot<T>(&self, f: impl FnOnce(&Db) -> Result<T>) -> Result<T> {
        self.execute_batch(if self.is_pg() {
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
        } else {
            "BEGIN DEFERRED"
        })?;
        let out = f(self);
        match &out {
            Ok(_) => self.execute_batch("COMMIT")?,
            Err(_) => {
                let _ = self.execute_batch("ROLLBACK");
            }
        }
        out
    }

    /// Statements without parameters, separated by semicolons.
    pub(crate) fn execute_batch(&self, sql: &str) -> Result<()> {
        match &self.0 {
            Engine::Lite(c) => Ok(c.execute_batch(sql)?),
            Engine::Pg(p) => p.batch(sql),
        }
    }
}

/// A prepared statement.
pub(crate) enum Stmt<'a> {
    Lite(rusqlite::CachedStatement<'a>),
    LiteOnce(rusqlite::Statement<'a>),
    Pg(&'a PgConn, tokio_postgres::Statement),
}

fn lite_params<'v>(values: &'v [ValueRef<'v>]) -> impl rusqlite::Params + 'v {
    rusqlite::params_from_iter(values.iter())
}

impl rusqlite::ToSql for ValueRef<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef as V};
        Ok(ToSqlOutput::Borrowed(match *self {
            ValueRef::Null => V::Null,
            ValueRef::Int(i) => V::Integer(i),
            ValueRef::Real(f) => V::Real(f),
            ValueRef::Text(s) => V::Text(s.as_bytes()),
            ValueRef::Blob(b) => V::Blob(b),
        }))
    }
}

impl<'a> Stmt<'a> {
    fn lite(&mut self) -> Option<&mut rusqlite::Statement<'a>> {
        match self {
            Stmt::Lite(s) => Some(s),
            Stmt::LiteOnce(s) => Some(s),
            Stmt::Pg(..) => None,
        }
    }

    pub(crate) fn execute(&mut self, params: impl Params) -> Result<usize> {
        let values = params.values();
        if let Stmt::Pg(p, st) = self {
            return p.execute(st, &values);
        }
        let s = self.lite().ok_or(StoreError::Closed)?;
        Ok(s.execute(lite_params(&values))?)
    }

    pub(crate) fn query(&mut self, params: impl Params) -> Result<Rows<'_>> {
        let values = params.values();
        if let Stmt::Pg(p, st) = self {
            return Ok(Rows::Pg(p.run(st, &values)?.into_iter(), None));
        }
        let s = self.lite().ok_or(StoreError::Closed)?;
        Ok(Rows::Lite(s.query(lite_params(&values))?))
    }

    pub(crate) fn query_row<T>(&mut self, params: impl Params, f: impl FnOnce(&Row<'_>) -> Result<T>) -> Result<T> {
        let mut rows = self.query(params)?;
        match rows.next()? {
            Some(r) => f(&r),
            None => Err(StoreError::NoRow),
        }
    }

    /// Every row, mapped.
    pub(crate) fn query_map<T>(
        &mut self,
        params: impl Params,
        mut f: impl FnMut(&Row<'_>) -> Result<T>,
    ) -> Result<std::vec::IntoIter<Result<T>>> {
        let mut rows = self.query(params)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(f(&r));
        }
        Ok(out.into_iter())
    }
}

/// The rows of a query, one at a time.
pub(crate) enum Rows<'s> {
    Lite(rusqlite::Rows<'s>),
    Pg(std::vec::IntoIter<tokio_postgres::Row>, Option<tokio_postgres::Row>),
}

impl Rows<'_> {
    #[allow(clippy::should_implement_trait)]
    pub(crate) fn next(&mut self) -> Result<Option<Row<'_>>> {
        match self {
            Rows::Lite(r) => Ok(r.next()?.map(Row::Lite)),
            Rows::Pg(it, cur) => {
                *cur = it.next();
                Ok(cur.as_ref().map(Row::Pg))
            }
        }
    }
}

/// A column's position.
pub(crate) trait ColIndex {
    fn index(self) -> usize;
}

impl ColIndex for usize {
    fn index(self) -> usize {
        self
    }
}

/// One row.
pub(crate) enum Row<'a> {
    Lite(&'a rusqlite::Row<'a>),
    Pg(&'a tokio_postgres::Row),
}

impl Row<'_> {
    /// Column `i` (from 0) as `T`. (The first type parameter mirrors rusqlite's, so
    /// that `get::<_, T>` reads the same.)
    pub(crate) fn get<I: ColIndex, T: FromValue>(&self, i: I) -> Result<T> {
        let i = i.index();
        match self {
            Row::Lite(r) => T::from_value(match r.get_ref(i)? {
                rusqlite::types::ValueRef::Null => ValueRef::Null,
                rusqlite::types::ValueRef::Integer(n) => ValueRef::Int(n),
                rusqlite::types::ValueRef::Real(f) => ValueRef::Real(f),
                rusqlite::types::ValueRef::Text(t) => ValueRef::Text(
                    std::str::from_utf8(t).map_err(|_| StoreError::Corrupt(format!("column {i} is not UTF-8")))?,
                ),
                rusqlite::types::ValueRef::Blob(b) => ValueRef::Blob(b),
            }),
            Row::Pg(r) => pg_column(r, i, T::from_value),
        }
    }
}

fn pg_column<T>(r: &tokio_postgres::Row, i: usize, f: impl FnOnce(ValueRef<'_>) -> Result<T>) -> Result<T> {
    let ty = r.columns().get(i).ok_or_else(|| StoreError::Corrupt(format!("no column {i}")))?.type_().clone();
    let v = match ty {
        Type::INT8 => r.try_get::<_, Option<i64>>(i)?.map_or(ValueRef::Null, ValueRef::Int),
        Type::INT4 => r.try_get::<_, Option<i32>>(i)?.map_or(ValueRef::Null, |n| ValueRef::Int(n.into())),
        Type::INT2 => r.try_get::<_, Option<i16>>(i)?.map_or(ValueRef::Null, |n| ValueRef::Int(n.into())),
        Type::BOOL => r.try_get::<_, Option<bool>>(i)?.map_or(ValueRef::Null, |b| ValueRef::Int(b.into())),
        Type::FLOAT8 => r.try_get::<_, Option<f64>>(i)?.map_or(ValueRef::Null, ValueRef::Real),
        Type::FLOAT4 => r.try_get::<_, Option<f32>>(i)?.map_or(ValueRef::Null, |n| ValueRef::Real(n.into())),
        Type::NUMERIC => r.try_get::<_, Option<Numeric>>(i)?.map_or(ValueRef::Null, |n| n.0),
        Type::BYTEA => return f(r.try_get::<_, Option<&[u8]>>(i)?.map_or(ValueRef::Null, ValueRef::Blob)),
        _ => return f(r.try_get::<_, Option<&str>>(i)?.map_or(ValueRef::Null, ValueRef::Text)),
    };
    f(v)
}

/// NUMERIC (what `sum` of integers gives) as an integer when it is one, else a real.
struct Numeric(ValueRef<'static>);

impl<'a> FromSql<'a> for Numeric {
    fn from_sql(_: &Type, raw: &'a [u8]) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let word = |k: usize| -> std::result::Result<i16, Box<dyn std::error::Error + Sync + Send>> {
            let b = raw.get(2 * k..2 * k + 2).ok_or("short numeric")?;
            Ok(i16::from_be_bytes([b[0], b[1]]))
        };
        let (ndigits, weight, sign, dscale) = (word(0)?, word(1)?, word(2)? as u16, word(3)?);
        if sign == 0xC000 {
            return Ok(Numeric(ValueRef::Real(f64::NAN)));
        }
        let mut value = 0f64;
        let mut int: Option<i128> = Some(0);
        for k in 0..ndigits.max(0) as usize {
            let d = word(4 + k)?;
            let power = i32::from(weight) - k as i32;
            value += f64::from(d) * 10000f64.powi(power);
            int = match (int, power) {
                (Some(acc), p) if (0..5).contains(&p) => acc.checked_add(i128::from(d) * 10000i128.pow(p as u32)),
                (Some(acc), _) if d == 0 => Some(acc),
                _ => None,
            };
        }
        let negative = sign == 0x4000;
        Ok(Numeric(match int.and_then(|n| i64::try_from(n).ok()) {
            Some(n) if dscale == 0 || value.fract() == 0.0 => ValueRef::Int(if negative { -n } else { n }),
            _ => ValueRef::Real(if negative { -value } else { value }),
        }))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

impl ToSql for ValueRef<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match (*self, ty) {
            (ValueRef::Null, _) => Ok(IsNull::Yes),
            (ValueRef::Int(i), &Type::INT8) => i.to_sql(ty, out),
            (ValueRef::Int(i), &Type::INT4) => i32::try_from(i)?.to_sql(ty, out),
            (ValueRef::Int(i), &Type::INT2) => i16::try_from(i)?.to_sql(ty, out),
            (ValueRef::Int(i), &Type::BOOL) => (i != 0).to_sql(ty, out),
            (ValueRef::Int(i), &Type::FLOAT8) => (i as f64).to_sql(ty, out),
            (ValueRef::Int(i), &Type::NUMERIC) => numeric(i, out),
            (ValueRef::Int(i), &Type::TEXT | &Type::VARCHAR) => i.to_string().as_str().to_sql(&Type::TEXT, out),
            (ValueRef::Real(f), &Type::FLOAT4) => (f as f32).to_sql(ty, out),
            (ValueRef::Real(f), &Type::FLOAT8) => f.to_sql(ty, out),
            (ValueRef::Text(s), &Type::BYTEA) => s.as_bytes().to_sql(ty, out),
            (ValueRef::Text(s), &Type::INT8 | &Type::INT4 | &Type::INT2 | &Type::BOOL) => {
                ValueRef::Int(s.trim().parse::<i64>()?).to_sql(ty, out)
            }
            // PostgreSQL's text has no NUL; decoded text (a body's, for search) may.
            (ValueRef::Text(s), &Type::TEXT | &Type::VARCHAR | &Type::BPCHAR | &Type::NAME | &Type::UNKNOWN) => {
                if s.contains('\0') {
                    s.replace('\0', "\u{FFFD}").as_str().to_sql(&Type::TEXT, out)
                } else {
                    s.to_sql(&Type::TEXT, out)
                }
            }
            (ValueRef::Blob(b), &Type::BYTEA) => b.to_sql(ty, out),
            (ValueRef::Blob(b), &Type::TEXT | &Type::VARCHAR) => {
                ValueRef::Text(std::str::from_utf8(b)?).to_sql(ty, out)
            }
            (v, ty) => Err(format!("a {} value cannot be stored as {ty}", kind(v)).into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

/// An integer as NUMERIC's binary form (base-10000 digits, most significant first).
fn numeric(i: i64, out: &mut bytes::BytesMut) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
    let mut n = i128::from(i).unsigned_abs();
    let mut digits = Vec::new();
    while n > 0 {
        digits.push((n % 10000) as i16);
        n /= 10000;
    }
    digits.reverse();
    let weight = digits.len() as i16 - 1;
    for w in [digits.len() as i16, weight.max(0), if i < 0 { 0x4000u16 as i16 } else { 0 }, 0] {
        out.extend_from_slice(&w.to_be_bytes());
    }
    for d in digits {
        out.extend_from_slice(&d.to_be_bytes());
    }
    Ok(IsNull::No)
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        match &e {
            rusqlite::Error::QueryReturnedNoRows => StoreError::NoRow,
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                StoreError::Constraint(e.to_string())
            }
            _ => StoreError::Db(e.to_string()),
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> StoreError {
        use tokio_postgres::error::SqlState;
        let text = match e.as_db_error() {
            Some(d) => d.message().to_string(),
            // What lies under (a TLS handshake's reason, a refused connection).
            None => match std::error::Error::source(&e) {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            },
        };
        match e.code() {
            Some(c) if c.code().starts_with("23") => StoreError::Constraint(text),
            Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED => {
                StoreError::Conflict(text)
            }
            _ => StoreError::Db(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_dollars_outside_quotes() {
        assert_eq!(pg_sql("SELECT a FROM t WHERE b = ?1 AND c = ?12"), "SELECT a FROM t WHERE b = $1 AND c = $12");
        assert_eq!(pg_sql("SELECT '?1', \"q?\" FROM t WHERE x = ?"), "SELECT '?1', \"q?\" FROM t WHERE x = $1");
        assert_eq!(pg_sql("VALUES (?, ?)"), "VALUES ($1, $2)");
    }

    #[test]
    fn numeric_round_trips_integers() {
        for n in [0i64, 1, 9999, 10000, 123456789, -42, i64::MAX / 3] {
            let mut b = bytes::BytesMut::new();
            numeric(n, &mut b).unwrap();
            match Numeric::from_sql(&Type::NUMERIC, &b).unwrap().0 {
                ValueRef::Int(back) => assert_eq!(back, n),
                other => panic!("{n} read back as {other:?}"),
            }
        }
    }
}

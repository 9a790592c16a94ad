//! Whole tables of a foreign database as rows of named cells, from SQLite or PostgreSQL:
//! read by column name, so that older schemas (a column missing) read as well as new ones.

use std::collections::HashMap;

use super::keylime::{ImportError, Source};

/// One stored value.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Bytes(Vec<u8>),
    Bool(bool),
}

/// A row: column name to value. A column the schema lacks reads as `Null`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row(pub HashMap<String, Cell>);

impl Row {
    pub fn get(&self, column: &str) -> &Cell {
        static NULL: Cell = Cell::Null;
        self.0.get(column).unwrap_or(&NULL)
    }

    /// Text, or the text of a number; `None` for NULL and bytes.
    pub fn text(&self, column: &str) -> Option<String> {
        match self.get(column) {
            Cell::Text(s) => Some(s.clone()),
            Cell::Int(n) => Some(n.to_string()),
            Cell::Real(r) => Some(r.to_string()),
            Cell::Bool(b) => Some(b.to_string()),
            Cell::Null | Cell::Bytes(_) => None,
        }
    }

    /// An integer, from an integer, a boolean or a numeric text.
    pub fn int(&self, column: &str) -> Option<i64> {
        match self.get(column) {
            Cell::Int(n) => Some(*n),
            Cell::Bool(b) => Some(i64::from(*b)),
            Cell::Real(r) if r.fract() == 0.0 => Some(*r as i64),
            Cell::Text(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    pub fn bytes(&self, column: &str) -> Option<Vec<u8>> {
        match self.get(column) {
            Cell::Bytes(b) => Some(b.clone()),
            Cell::Text(s) => Some(s.as_bytes().to_vec()),
            _ => None,
        }
    }

    /// SQLite keeps booleans as 0/1, PostgreSQL as booleans.
    pub fn flag(&self, column: &str) -> bool {
        self.int(column).is_some_and(|n| n != 0)
    }
}

/// Every row of `table`; an absent table is empty (older schemas lack some).
pub fn read_table(source: &Source, table: &str) -> Result<Vec<Row>, ImportError> {
    match source {
        Source::Sqlite(path) => sqlite_table(path, table),
        Source::Postgres(url) => {
            // The client runs a runtime of its own: not on a thread that drives one.
            let (url, table) = (url.clone(), table.to_owned());
            std::thread::scope(|scope| {
                scope
                    .spawn(move || postgres_table(&url, &table))
                    .join()
                    .unwrap_or_else(|_| Err(ImportError::Read("reading PostgreSQL panicked".into())))
            })
        }
    }
}

fn sqlite_table(path: &std::path::Path, table: &str) -> Result<Vec<Row>, ImportError> {
    use rusqlite::types::ValueRef;
    let read = |e: rusqlite::Error| ImportError::Read(format!("{}: {e}", path.display()));
    let conn = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(read)?;
    let exists: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [table],
            |row| row.get(0),
        )
        .map_err(read)?;
    if exists == 0 {
        return Ok(Vec::new());
    }
    let mut statement = conn
        .prepare(&format!("SELECT * FROM \"{table}\""))
        .map_err(read)?;
    let names: Vec<String> = statement.column_names().map(str::to_owned).collect();
    let mut rows = statement.query([]).map_err(read)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(read)? {
        let mut cells = HashMap::new();
        for (i, name) in names.iter().enumerate() {
            let cell = match row.get_ref(i).map_err(read)? {
                ValueRef::Null => Cell::Null,
                ValueRef::Integer(n) => Cell::Int(n),
                ValueRef::Real(r) => Cell::Real(r),
                ValueRef::Text(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => Cell::Bytes(b.to_vec()),
            };
            cells.insert(name.clone(), cell);
        }
        out.push(Row(cells));
    }
    Ok(out)
}

fn postgres_table(url: &str, table: &str) -> Result<Vec<Row>, ImportError> {
    use postgres::types::Type;
    let read = |e: postgres::Error| ImportError::Read(format!("PostgreSQL: {e}"));
    let mut client = postgres::Client::connect(url, postgres::NoTls).map_err(read)?;
    let exists = client
        .query_opt(
            "SELECT 1 FROM information_schema.tables WHERE table_name = $1 AND table_schema = current_schema()",
            &[&table],
        )
        .map_err(read)?
        .is_some();
    if !exists {
        return Ok(Vec::new());
    }
    let rows = client
        .query(&format!("SELECT * FROM \"{table}\""), &[])
        .map_err(read)?;
    let mut out = Vec::new();
    for row in &rows {
        let mut cells = HashMap::new();
        for (i, column) in row.columns().iter().enumerate() {
            let cell = match *column.type_() {
                Type::BOOL => row.try_get::<_, Option<bool>>(i).map(|v| v.map(Cell::Bool)),
                Type::INT2 => row
                    .try_get::<_, Option<i16>>(i)
                    .map(|v| v.map(|n| Cell::Int(n.into()))),
                Type::INT4 => row
                    .try_get::<_, Option<i32>>(i)
                    .map(|v| v.map(|n| Cell::Int(n.into()))),
                Type::INT8 => row.try_get::<_, Option<i64>>(i).map(|v| v.map(Cell::Int)),
                Type::FLOAT4 => row
                    .try_get::<_, Option<f32>>(i)
                    .map(|v| v.map(|r| Cell::Real(r.into()))),
                Type::FLOAT8 => row.try_get::<_, Option<f64>>(i).map(|v| v.map(Cell::Real)),
                Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(i).map(|v| v.map(Cell::Bytes)),
                _ => row.try_get::<_, Option<String>>(i).map(|v| v.map(Cell::Text)),
            }
            .map_err(|e| ImportError::Read(format!("{table}.{}: {e}", column.name())))?;
            cells.insert(column.name().to_owned(), cell.unwrap_or(Cell::Null));
        }
        out.push(Row(cells));
    }
    Ok(out)
}

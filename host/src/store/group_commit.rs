//! Group commit for the SQLite store: the hot writes (verdicts, push attestations, session
//! renewals) from many threads share one transaction and one commit.
//!
//! A writer queues its write, then takes the connection. Whoever holds the connection runs
//! every queued write in one `BEGIN IMMEDIATE` transaction, each inside its own savepoint (a
//! failing write is rolled back alone), commits once, and then hands each writer its result.
//! While one batch commits, the next writers queue up behind the connection lock and go
//! together in the next batch: under load, one commit serves many verdicts; alone, a write
//! is committed at once as before. A writer's result arrives only after its batch commit,
//! so a caller never sees a write that could still be rolled back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;

use super::StoreError;

/// What a queued write hands back once it has run: it delivers the write's result, or the
/// batch's failure if the commit did not happen.
type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;
type Job = Box<dyn QueuedWrite>;

/// A write waiting in the queue.
trait QueuedWrite: Send {
    /// Runs the write in the open transaction.
    fn run(self: Box<Self>, conn: &Connection) -> Completion;
    /// Tells the writer its batch could not start.
    fn fail(self: Box<Self>, reason: String);
}

struct Write<F, T> {
    write: F,
    sender: SyncSender<Result<T, StoreError>>,
}

impl<F, T> QueuedWrite for Write<F, T>
where
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
    T: Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> Completion {
        let Write { write, sender } = *self;
        run_job(conn, write, sender)
    }

    fn fail(self: Box<Self>, reason: String) {
        let _ = self.sender.send(Err(StoreError::Commit(reason)));
    }
}

/// Writes waiting for the next batch.
#[derive(Default)]
pub(super) struct WriteQueue {
    jobs: Mutex<Vec<Job>>,
    /// Batches committed (or attempted): fewer than the writes when they were grouped.
    batches: AtomicU64,
}

/// The largest batch: a bound on how long one commit holds the write lock.
const MAX_BATCH: usize = 256;

impl WriteQueue {
    /// Runs `write` in the next group commit on `conn` and returns its result once that
    /// commit is done. `write` runs on whichever thread commits the batch, so it owns what
    /// it writes.
    pub(super) fn write<T: Send + 'static>(
        &self,
        conn: &Mutex<Connection>,
        write: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (sender, receiver) = sync_channel::<Result<T, StoreError>>(1);
        self.lock()?.push(Box::new(Write { write, sender }));
        {
            let mut conn = conn.lock().map_err(|_| StoreError::Poisoned)?;
            // The holder before may have committed this write already.
            loop {
                if let Ok(result) = receiver.try_recv() {
                    return result;
                }
                let batch = self.take_batch()?;
                if batch.is_empty() {
                    break;
                }
                self.batches.fetch_add(1, Ordering::Relaxed);
                commit_batch(&mut conn, batch);
            }
        }
        receiver.recv().map_err(|_| StoreError::Poisoned)?
    }

    /// Batches run so far.
    #[cfg(test)]
    pub(super) fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    fn lock(&self) -> Result<MutexGuard<'_, Vec<Job>>, StoreError> {
        self.jobs.lock().map_err(|_| StoreError::Poisoned)
    }

    fn take_batch(&self) -> Result<Vec<Job>, StoreError> {
        let mut jobs = self.lock()?;
        let taken = jobs.len().min(MAX_BATCH);
        let rest = jobs.split_off(taken);
        Ok(std::mem::replace(&mut *jobs, rest))
    }
}

/// Runs one write inside its own savepoint (undone alone if it fails) and returns what
/// delivers its result after the commit.
fn run_job<T: Send + 'static>(
    conn: &Connection,
    write: impl FnOnce(&Connection) -> Result<T, StoreError>,
    sender: SyncSender<Result<T, StoreError>>,
) -> Completion {
    let result = savepoint(conn, "SAVEPOINT group_write").and_then(|()| {
        let result = write(conn);
        let end = if result.is_ok() {
            savepoint(conn, "RELEASE group_write")
        } else {
            savepoint(conn, "ROLLBACK TO group_write").and_then(|()| savepoint(conn, "RELEASE group_write"))
        };
        end.and(result)
    });
    Box::new(move |committed| {
        let delivered = match committed {
            Ok(()) => result,
            Err(e) => Err(StoreError::Commit(e)),
        };
        // The writer may have given up waiting (its thread gone): nothing to deliver to.
        let _ = sender.send(delivered);
    })
}

fn savepoint(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// One transaction for the whole batch; every writer learns whether it committed.
fn commit_batch(conn: &mut Connection, batch: Vec<Job>) {
    if let Err(e) = savepoint(conn, "BEGIN IMMEDIATE") {
        let reason = e.to_string();
        for job in batch {
            job.fail(reason.clone());
        }
        return;
    }
    let completions: Vec<Completion> = batch.into_iter().map(|job| job.run(conn)).collect();
    let committed = savepoint(conn, "COMMIT").map_err(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        e.to_string()
    });
    for complete in completions {
        complete(committed.clone());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn table() -> Arc<(Mutex<Connection>, WriteQueue)> {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .unwrap();
        Arc::new((Mutex::new(conn), WriteQueue::default()))
    }

    fn insert(conn: &Connection, k: i64, v: &str) -> Result<i64, StoreError> {
        conn.prepare_cached("INSERT INTO t (k, v) VALUES (?1, ?2)")?
            .execute(rusqlite::params![k, v])?;
        Ok(k)
    }

    /// Holds the connection while `n` writers queue, then lets them go: one batch, one commit.
    /// Writer 3 inserts a row and then fails: it alone is undone.
    #[test]
    fn queued_writes_commit_together_and_a_failing_write_is_undone_alone() {
        let store = table();
        let held = store.0.lock().unwrap();
        let writers: Vec<_> = (0..10i64)
            .map(|k| {
                let store = store.clone();
                std::thread::spawn(move || {
                    store.1.write(&store.0, move |conn| {
                        insert(conn, k, "row")?;
                        if k == 3 {
                            // A duplicate key: the write fails after its first insert.
                            insert(conn, k, "again")?;
                        }
                        Ok(k)
                    })
                })
            })
            .collect();
        while store.1.jobs.lock().unwrap().len() < 10 {
            std::thread::yield_now();
        }
        drop(held);
        let results: Vec<_> = writers.into_iter().map(|w| w.join().unwrap()).collect();
        for (k, result) in results.iter().enumerate() {
            match result {
                Ok(v) => assert_eq!(*v, k as i64),
                Err(e) => assert_eq!(k, 3, "{e}"),
            }
        }
        assert!(results[3].is_err());
        assert_eq!(store.1.batches(), 1);
        let conn = store.0.lock().unwrap();
        let keys: Vec<i64> = conn
            .prepare("SELECT k FROM t ORDER BY k")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(keys, vec![0, 1, 2, 4, 5, 6, 7, 8, 9]);
        assert!(conn.is_autocommit(), "the batch's transaction is closed");
    }

    /// A write whose batch cannot start (the database is locked by another connection) gets
    /// the failure, and nothing of it is stored.
    #[test]
    fn a_batch_that_cannot_begin_fails_its_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sqlite");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .unwrap();
        conn.busy_timeout(std::time::Duration::ZERO).unwrap();
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let queue = WriteQueue::default();
        let conn = Mutex::new(conn);
        let result = queue.write(&conn, |conn| insert(conn, 1, "row"));
        assert!(matches!(result, Err(StoreError::Commit(_))), "{result:?}");
        other.execute_batch("ROLLBACK").unwrap();
        let count: i64 = conn
            .lock()
            .unwrap()
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 0);
        assert_eq!(queue.write(&conn, |conn| insert(conn, 1, "row")).unwrap(), 1);
    }
}

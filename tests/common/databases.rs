//! The database servers the SQL tests run against — PostgreSQL, MariaDB and
//! NATS JetStream on this machine — with clients to set up tables and check
//! what a sync left. A server that cannot be reached fails the test at once,
//! naming the server, where it was looked for and how to start it: a test
//! that needs a service never passes without it.

use std::time::Duration;

use mysql_async::prelude::Queryable;

pub const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
pub const MARIADB_URL: &str = "mysql://root@127.0.0.1:3306/test";
pub const NATS_URL: &str = "nats://127.0.0.1:4222";

/// A name no other test (nor another run of this one) uses: tests run in
/// parallel and repeatedly against the same servers.
pub fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}_{}_{nanos:09}", std::process::id())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
}

/// A PostgreSQL session on the `test` database.
pub struct Postgres {
    client: tokio_postgres::Client,
    runtime: tokio::runtime::Runtime,
}

impl Postgres {
    pub fn connect() -> Postgres {
        let runtime = runtime();
        let connected = runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), tokio_postgres::connect(POSTGRES_URL, tokio_postgres::NoTls))
                .await
        });
        let (client, connection) = match connected {
            Ok(Ok(connected)) => connected,
            Ok(Err(e)) => panic!(
                "this test needs PostgreSQL at {POSTGRES_URL} and cannot connect: {e}; start it with \
                 `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
            ),
            Err(_) => panic!("this test needs PostgreSQL at {POSTGRES_URL}, which did not answer within 10 s"),
        };
        runtime.spawn(connection);
        Postgres { client, runtime }
    }

    /// Runs SQL statements (a script).
    pub fn run(&self, sql: &str) {
        self.runtime.block_on(self.client.batch_execute(sql)).unwrap_or_else(|e| panic!("PostgreSQL: {sql}: {e}"));
    }

    /// The rows of a query, every value as text (`None` for NULL).
    pub fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let messages =
            self.runtime.block_on(self.client.simple_query(sql)).unwrap_or_else(|e| panic!("PostgreSQL: {sql}: {e}"));
        messages
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => {
                    Some((0..row.len()).map(|i| row.get(i).map(str::to_string)).collect())
                }
                _ => None,
            })
            .collect()
    }

    /// The single value a query returns.
    pub fn value(&self, sql: &str) -> Option<String> {
        self.rows(sql).into_iter().next().and_then(|row| row.into_iter().next()).flatten()
    }
}

/// A MariaDB session on the `test` database.
pub struct MariaDb {
    connection: Option<mysql_async::Conn>,
    runtime: tokio::runtime::Runtime,
}

impl MariaDb {
    pub fn connect() -> MariaDb {
        let runtime = runtime();
        let connected = runtime.block_on(async {
            let opts = mysql_async::Opts::from_url(MARIADB_URL).unwrap();
            tokio::time::timeout(Duration::from_secs(10), mysql_async::Conn::new(opts)).await
        });
        let connection = match connected {
            Ok(Ok(connection)) => connection,
            Ok(Err(e)) => panic!(
                "this test needs MariaDB at {MARIADB_URL} and cannot connect: {e}; start it with \
                 `start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd`"
            ),
            Err(_) => panic!("this test needs MariaDB at {MARIADB_URL}, which did not answer within 10 s"),
        };
        let mut db = MariaDb { connection: Some(connection), runtime };
        // Checksums below are taken over whole tables.
        db.run("SET SESSION group_concat_max_len = 1073741824");
        db
    }

    pub fn run(&mut self, sql: &str) {
        let connection = self.connection.as_mut().unwrap();
        self.runtime.block_on(connection.query_drop(sql)).unwrap_or_else(|e| panic!("MariaDB: {sql}: {e}"));
    }

    /// The rows of a query, every value as text (`None` for NULL).
    pub fn rows(&mut self, sql: &str) -> Vec<Vec<Option<String>>> {
        let connection = self.connection.as_mut().unwrap();
        let rows: Vec<mysql_async::Row> =
            self.runtime.block_on(connection.query(sql)).unwrap_or_else(|e| panic!("MariaDB: {sql}: {e}"));
        rows.into_iter()
            .map(|row| {
                row.unwrap()
                    .into_iter()
                    .map(|value| match value {
                        mysql_async::Value::NULL => None,
                        mysql_async::Value::Bytes(bytes) => Some(String::from_utf8(bytes).unwrap()),
                        other => Some(other.as_sql(true)),
                    })
                    .collect()
            })
            .collect()
    }

    pub fn value(&mut self, sql: &str) -> Option<String> {
        self.rows(sql).into_iter().next().and_then(|row| row.into_iter().next()).flatten()
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            let _ = self.runtime.block_on(connection.disconnect());
        }
    }
}

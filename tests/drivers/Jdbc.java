// pgjdbc (Debian's libpostgresql-jdbc-java) against Freshet: typed
// parameters and results, batches, server-side prepared statements,
// DatabaseMetaData, transactions and SQLSTATEs. Run as a single source
// file: java -cp /usr/share/java/postgresql.jar Jdbc.java PORT
// Prints "ok jdbc" when every check passed; throws on the first failure.

import java.math.BigDecimal;
import java.sql.*;
import java.util.ArrayList;
import java.util.List;

public class Jdbc {
    static void check(boolean condition, String what) {
        if (!condition) throw new AssertionError(what);
    }

    static <T> void equal(T got, T want, String what) {
        if (got == null ? want != null : !got.equals(want)) {
            throw new AssertionError(what + ": got " + got + ", want " + want);
        }
    }

    static long count(Connection conn, String sql) throws SQLException {
        try (Statement s = conn.createStatement(); ResultSet rs = s.executeQuery(sql)) {
            check(rs.next(), "a row from " + sql);
            return rs.getLong(1);
        }
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/freshet";
        try (Connection conn = DriverManager.getConnection(url, "freshet", "");
             Connection other = DriverManager.getConnection(url, "freshet", "")) {
            DatabaseMetaData meta = conn.getMetaData();
            equal(meta.getDatabaseProductName(), "PostgreSQL", "product name");
            check(meta.getDatabaseMajorVersion() >= 9, "server version " + meta.getDatabaseProductVersion());

            try (Statement s = conn.createStatement()) {
                s.execute("DROP TABLE IF EXISTS jt CASCADE");
                s.execute("CREATE TABLE jt (id INT PRIMARY KEY, name TEXT NOT NULL, amount NUMERIC(10,2),"
                        + " ok BOOLEAN, seen TIMESTAMP)");
                s.execute("CREATE MATERIALIZED VIEW jt_total AS SELECT count(*) AS n, sum(amount) AS total FROM jt");
            }

            // Typed parameters; more executions than pgjdbc's prepareThreshold
            // (5), so the later ones run a named server-side statement.
            Timestamp seen = Timestamp.valueOf("2026-01-02 03:04:05");
            try (PreparedStatement insert = conn.prepareStatement("INSERT INTO jt VALUES (?, ?, ?, ?, ?)")) {
                for (int id = 1; id <= 8; id++) {
                    insert.setInt(1, id);
                    insert.setString(2, "name " + id);
                    insert.setBigDecimal(3, new BigDecimal(id + ".25"));
                    insert.setBoolean(4, id % 2 == 0);
                    insert.setTimestamp(5, seen);
                    equal(insert.executeUpdate(), 1, "rows inserted");
                }
            }
            try (PreparedStatement batch = conn.prepareStatement("INSERT INTO jt (id, name) VALUES (?, ?)")) {
                for (int id = 9; id <= 11; id++) {
                    batch.setInt(1, id);
                    batch.setString(2, "batch " + id);
                    batch.addBatch();
                }
                int[] counts = batch.executeBatch();
                equal(counts.length, 3, "batch results");
            }
            equal(count(conn, "SELECT count(*) FROM jt"), 11L, "rows after inserts");

            try (PreparedStatement query = conn.prepareStatement(
                    "SELECT id, name, amount, ok, seen FROM jt WHERE id = ? AND name <> ?")) {
                for (int round = 0; round < 7; round++) {
                    query.setInt(1, 2);
                    query.setString(2, "nobody");
                    try (ResultSet rs = query.executeQuery()) {
                        check(rs.next(), "row 2");
                        equal(rs.getInt("id"), 2, "id");
                        equal(rs.getString("name"), "name 2", "name");
                        equal(rs.getBigDecimal("amount"), new BigDecimal("2.25"), "amount");
                        equal(rs.getBoolean("ok"), true, "ok");
                        equal(rs.getTimestamp("seen"), seen, "seen");
                        check(!rs.next(), "one row");
                        ResultSetMetaData md = rs.getMetaData();
                        equal(md.getColumnCount(), 5, "columns");
                        equal(md.getColumnTypeName(1), "int4", "id type");
                        equal(md.getColumnTypeName(2), "text", "name type");
                        equal(md.getColumnTypeName(3), "numeric", "amount type");
                        equal(md.getColumnType(4), Types.BIT, "ok type");
                        equal(md.getColumnTypeName(5), "timestamp", "seen type");
                    }
                }
            }
            try (PreparedStatement nulls = conn.prepareStatement("SELECT amount FROM jt WHERE id = ?")) {
                nulls.setInt(1, 10);
                try (ResultSet rs = nulls.executeQuery()) {
                    check(rs.next(), "row 10");
                    check(rs.getBigDecimal(1) == null && rs.wasNull(), "a NULL amount");
                }
            }

            // DatabaseMetaData, as IDEs and BI tools browse.
            List<String> tables = new ArrayList<>();
            try (ResultSet rs = meta.getTables(null, "public", "jt%", new String[] {"TABLE"})) {
                while (rs.next()) tables.add(rs.getString("TABLE_NAME"));
            }
            equal(tables, List.of("jt"), "getTables");
            List<String> columns = new ArrayList<>();
            try (ResultSet rs = meta.getColumns(null, "public", "jt", null)) {
                while (rs.next()) columns.add(rs.getString("COLUMN_NAME") + ":" + rs.getString("TYPE_NAME"));
            }
            equal(columns, List.of("id:int4", "name:text", "amount:numeric", "ok:bool", "seen:timestamp"), "getColumns");
            List<String> keys = new ArrayList<>();
            try (ResultSet rs = meta.getPrimaryKeys(null, "public", "jt")) {
                while (rs.next()) keys.add(rs.getString("COLUMN_NAME"));
            }
            equal(keys, List.of("id"), "getPrimaryKeys");
            try (ResultSet rs = meta.getImportedKeys(null, "public", "jt")) {
                check(!rs.next(), "getImportedKeys: no foreign keys");
            }
            List<String> schemas = new ArrayList<>();
            try (ResultSet rs = meta.getSchemas()) {
                while (rs.next()) schemas.add(rs.getString("TABLE_SCHEM"));
            }
            check(schemas.contains("public"), "getSchemas: " + schemas);

            // Transactions: writes reach others (and the view) at commit.
            conn.setAutoCommit(false);
            try (PreparedStatement move = conn.prepareStatement("UPDATE jt SET amount = amount + ? WHERE id = ?")) {
                move.setBigDecimal(1, new BigDecimal("10.00"));
                move.setInt(2, 1);
                equal(move.executeUpdate(), 1, "updated");
                move.setBigDecimal(1, new BigDecimal("-10.00"));
                move.setInt(2, 2);
                equal(move.executeUpdate(), 1, "updated");
            }
            try (Statement s = conn.createStatement()) {
                s.executeUpdate("DELETE FROM jt WHERE id = 11");
            }
            equal(count(conn, "SELECT count(*) FROM jt"), 10L, "own delete visible");
            equal(count(other, "SELECT count(*) FROM jt"), 11L, "uncommitted delete invisible");
            conn.commit();
            equal(count(other, "SELECT count(*) FROM jt"), 10L, "committed delete");
            equal(count(other, "SELECT n FROM jt_total"), 10L, "the view after commit");
            try (Statement s = conn.createStatement()) {
                s.executeUpdate("DELETE FROM jt");
            }
            conn.rollback();
            equal(count(other, "SELECT count(*) FROM jt"), 10L, "rolled back");
            conn.setAutoCommit(true);

            // Errors carry their SQLSTATE; the connection stays usable.
            try (Statement s = conn.createStatement()) {
                s.executeQuery("SELECT * FROM no_such_table");
                throw new AssertionError("expected an error");
            } catch (SQLException e) {
                equal(e.getSQLState(), "42P01", "missing table");
            }
            try (PreparedStatement dup = conn.prepareStatement("INSERT INTO jt (id, name) VALUES (?, ?)")) {
                dup.setInt(1, 1);
                dup.setString(2, "again");
                dup.executeUpdate();
                throw new AssertionError("expected a duplicate key");
            } catch (SQLException e) {
                equal(e.getSQLState(), "23505", "duplicate key");
            }
            equal(count(conn, "SELECT 41 + 1"), 42L, "usable after errors");
        }
        System.out.println("ok jdbc");
    }
}

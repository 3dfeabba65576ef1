"""Python drivers against a running Freshet: psycopg2, psycopg 3 (server-side
binding, text and binary results), asyncpg (binary protocol) and
SQLAlchemy's inspector. Each section asserts the values it gets back.

Usage: python_drivers.py PORT SECTION...   (sections: psycopg2 psycopg asyncpg sqlalchemy)
Prints "ok SECTION" for every section that passed; exits non-zero at the
first failure with the reason.
"""

import asyncio
import datetime
import decimal
import sys

PORT = int(sys.argv[1])
DSN = f"host=127.0.0.1 port={PORT} user=freshet dbname=freshet"

ROWS = [
    (1, "ada", decimal.Decimal("12.50"), 1.5, True, datetime.datetime(2026, 1, 2, 3, 4, 5)),
    (2, "bob", decimal.Decimal("0.25"), -2.0, False, None),
    (3, "cé", None, None, None, datetime.datetime(2026, 12, 31, 23, 59, 59)),
]


def check_rows(got, label):
    got = [tuple(r) for r in got]
    assert got == ROWS, f"{label}: {got!r} != {ROWS!r}"


def test_psycopg2():
    import psycopg2

    conn = psycopg2.connect(DSN)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("DROP TABLE IF EXISTS py2 CASCADE")
    cur.execute(
        "CREATE TABLE py2 (id BIGINT PRIMARY KEY, name TEXT, amount NUMERIC(10,2), score DOUBLE PRECISION,"
        " ok BOOLEAN, seen TIMESTAMP)"
    )
    cur.executemany("INSERT INTO py2 VALUES (%s, %s, %s, %s, %s, %s)", ROWS)
    cur.execute("CREATE MATERIALIZED VIEW py2_total AS SELECT count(*) AS n, sum(amount) AS total FROM py2")
    cur.execute("SELECT id, name, amount, score, ok, seen FROM py2 ORDER BY id")
    check_rows(cur.fetchall(), "psycopg2 select")
    assert [d.name for d in cur.description] == ["id", "name", "amount", "score", "ok", "seen"], cur.description
    cur.execute("SELECT name FROM py2 WHERE id = %s AND name <> %s", (2, "x"))
    assert cur.fetchone() == ("bob",)
    cur.execute("SELECT n, total FROM py2_total")
    assert cur.fetchone() == (3, decimal.Decimal("12.75"))
    cur.execute("UPDATE py2 SET amount = amount + 1 WHERE id = %s", (1,))
    assert cur.rowcount == 1, cur.rowcount
    cur.execute("SELECT total FROM py2_total")
    assert cur.fetchone() == (decimal.Decimal("13.75"),)
    assert conn.server_version >= 90000, conn.server_version
    # A transaction block, as psycopg2 opens one by default: its writes
    # reach other sessions (and the view) at commit, and not at all on
    # rollback.
    conn.autocommit = False
    cur = conn.cursor()
    cur.execute("SELECT count(*) FROM py2")
    assert cur.fetchone() == (3,)
    other = psycopg2.connect(DSN)
    other.autocommit = True
    watch = other.cursor()
    cur.execute("INSERT INTO py2 (id, name) VALUES (%s, %s)", (10, "in block"))
    cur.execute("SELECT count(*) FROM py2")
    assert cur.fetchone() == (4,)
    watch.execute("SELECT count(*) FROM py2")
    assert watch.fetchone() == (3,), "an uncommitted row was visible"
    conn.commit()
    watch.execute("SELECT n FROM py2_total")
    assert watch.fetchone() == (4,)
    cur.execute("DELETE FROM py2 WHERE id = %s", (10,))
    conn.rollback()
    watch.execute("SELECT count(*) FROM py2 WHERE id = 10")
    assert watch.fetchone() == (1,), "a rolled-back delete took effect"
    cur.execute("DELETE FROM py2 WHERE id = %s", (10,))
    conn.commit()
    other.close()
    # Errors carry the SQLSTATE and leave the connection usable.
    try:
        cur.execute("SELECT * FROM no_such_table")
        raise AssertionError("expected an error")
    except psycopg2.Error as error:
        assert error.pgcode == "42P01", error.pgcode
        conn.rollback()
    cur.execute("SELECT 1")
    assert cur.fetchone() == (1,)
    conn.close()


def test_psycopg():
    import psycopg

    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS py3 CASCADE")
        conn.execute(
            "CREATE TABLE py3 (id BIGINT PRIMARY KEY, name TEXT, amount NUMERIC(10,2), score DOUBLE PRECISION,"
            " ok BOOLEAN, seen TIMESTAMP)"
        )
        with conn.cursor() as cur:
            # Server-side binding: parameters travel apart from the text.
            cur.executemany("INSERT INTO py3 VALUES (%s, %s, %s, %s, %s, %s)", ROWS)
            cur.execute("SELECT id, name, amount, score, ok, seen FROM py3 ORDER BY id")
            check_rows(cur.fetchall(), "psycopg text")
            cur.execute("SELECT name FROM py3 WHERE id = %s", (3,), prepare=True)
            assert cur.fetchone() == ("cé",)
            cur.execute("SELECT name FROM py3 WHERE id = %s", (1,), prepare=True)
            assert cur.fetchone() == ("ada",)
        with conn.cursor(binary=True) as cur:
            cur.execute("SELECT id, name, amount, score, ok, seen FROM py3 WHERE id >= %s ORDER BY id", (1,))
            check_rows(cur.fetchall(), "psycopg binary")
        row = conn.execute("SELECT count(*), max(score) FROM py3 WHERE ok IS NOT NULL").fetchone()
        assert row == (2, 1.5), row
        try:
            conn.execute("INSERT INTO py3 VALUES (%s, 'dup', NULL, NULL, NULL, NULL)", (1,))
            raise AssertionError("expected a unique violation")
        except psycopg.errors.UniqueViolation:
            pass
        assert conn.execute("SELECT count(*) FROM py3").fetchone() == (3,)


async def asyncpg_main():
    import asyncpg

    conn = await asyncpg.connect(host="127.0.0.1", port=PORT, user="freshet", database="freshet")
    try:
        await conn.execute("DROP TABLE IF EXISTS apg CASCADE")
        await conn.execute(
            "CREATE TABLE apg (id BIGINT PRIMARY KEY, name TEXT, amount NUMERIC(10,2), score DOUBLE PRECISION,"
            " ok BOOLEAN, seen TIMESTAMP)"
        )
        await conn.executemany("INSERT INTO apg VALUES ($1, $2, $3, $4, $5, $6)", ROWS)
        records = await conn.fetch("SELECT id, name, amount, score, ok, seen FROM apg WHERE id > $1 ORDER BY id", 0)
        check_rows([tuple(r.values()) for r in records], "asyncpg fetch")
        assert records[0]["name"] == "ada"
        assert await conn.fetchval("SELECT count(*) FROM apg WHERE name = $1", "bob") == 1
        statement = await conn.prepare("SELECT amount FROM apg WHERE id = $1")
        assert await statement.fetchval(2) == decimal.Decimal("0.25")
        assert [a.name for a in statement.get_attributes()] == ["amount"]
        try:
            await conn.fetch("SELECT * FROM missing_table")
            raise AssertionError("expected an error")
        except asyncpg.exceptions.UndefinedTableError:
            pass
        assert await conn.fetchval("SELECT 40 + $1::int", 2) == 42
    finally:
        await conn.close()


def test_asyncpg():
    asyncio.run(asyncpg_main())


def test_sqlalchemy():
    import sqlalchemy
    from sqlalchemy import inspect, text

    engine = sqlalchemy.create_engine(f"postgresql+psycopg2://freshet@127.0.0.1:{PORT}/freshet")
    with engine.connect() as conn:
        conn.execute(text("DROP TABLE IF EXISTS sa_orders CASCADE"))
        conn.execute(text("CREATE TABLE sa_orders (id BIGINT PRIMARY KEY, customer TEXT NOT NULL, amount NUMERIC(12,2))"))
        conn.execute(text("CREATE VIEW sa_big AS SELECT id FROM sa_orders WHERE amount > 10"))
        conn.execute(text("CREATE MATERIALIZED VIEW sa_per_customer AS SELECT customer, count(*) AS n FROM sa_orders GROUP BY customer"))
        conn.execute(text("INSERT INTO sa_orders VALUES (1, 'x', 20.00), (2, 'y', 5.00)"))
        conn.commit()
        assert conn.execute(text("SELECT count(*) FROM sa_big")).scalar() == 1
    inspector = inspect(engine)
    assert "public" in inspector.get_schema_names(), inspector.get_schema_names()
    tables = inspector.get_table_names()
    assert "sa_orders" in tables and "sa_big" not in tables, tables
    assert "sa_big" in inspector.get_view_names(), inspector.get_view_names()
    assert "sa_per_customer" in inspector.get_materialized_view_names(), inspector.get_materialized_view_names()
    columns = {c["name"]: c for c in inspector.get_columns("sa_orders")}
    assert list(columns) == ["id", "customer", "amount"], list(columns)
    assert isinstance(columns["id"]["type"], sqlalchemy.BigInteger), columns["id"]
    assert columns["customer"]["nullable"] is False and columns["amount"]["nullable"] is True
    assert isinstance(columns["amount"]["type"], sqlalchemy.Numeric) and columns["amount"]["type"].scale == 2
    assert inspector.get_pk_constraint("sa_orders")["constrained_columns"] == ["id"]
    assert "amount > 10" in inspector.get_view_definition("sa_big")
    mv_columns = [c["name"] for c in inspector.get_columns("sa_per_customer")]
    assert mv_columns == ["customer", "n"], mv_columns
    # The primary key's index backs a constraint: no other index.
    assert inspector.get_indexes("sa_orders") == [], inspector.get_indexes("sa_orders")
    assert inspector.get_foreign_keys("sa_orders") == []
    # Full reflection, then queries built with SQLAlchemy Core on it, as BI
    # tools built on SQLAlchemy (Superset) do.
    orders = sqlalchemy.Table("sa_orders", sqlalchemy.MetaData(), autoload_with=engine)
    assert [c.name for c in orders.primary_key.columns] == ["id"], orders.primary_key
    assert isinstance(orders.c.amount.type, sqlalchemy.Numeric)
    with engine.connect() as conn:
        got = conn.execute(sqlalchemy.select(orders.c.customer).where(orders.c.amount > 10)).all()
        assert [tuple(r) for r in got] == [("x",)], got


SECTIONS = {
    "psycopg2": test_psycopg2,
    "psycopg": test_psycopg,
    "asyncpg": test_asyncpg,
    "sqlalchemy": test_sqlalchemy,
}

if __name__ == "__main__":
    for name in sys.argv[2:]:
        SECTIONS[name]()
        print(f"ok {name}", flush=True)

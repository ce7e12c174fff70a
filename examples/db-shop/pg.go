package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// newPg makes a pool that connects on first use and never pings a connection it hands out (a
// ping would be one more exchange in a request's trace).
func newPg(url string) (*pgxpool.Pool, error) {
	config, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	config.ShouldPing = func(context.Context, pgxpool.ShouldPingParams) bool { return false }
	return pgxpool.NewWithConfig(context.Background(), config)
}

// pgHandler: a query with a literal over the simple protocol, the same with a parameter over
// the extended protocol (pgx prepares it once per connection as a named statement, then
// only binds and executes it), an INSERT with a literal and one with a parameter, and a query
// of a table that does not exist (SQLSTATE 42P01, at Parse).
func pgHandler(pool *pgxpool.Pool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		var id int
		var item string
		err := pool.QueryRow(ctx, "SELECT id, item FROM orders WHERE id = 1",
			pgx.QueryExecModeSimpleProtocol).Scan(&id, &item)
		if err != nil {
			unreachable(w, "plain SELECT", err)
			return
		}
		if err := pool.QueryRow(ctx, "SELECT item FROM orders WHERE id = $1", 1).Scan(&item); err != nil {
			unreachable(w, "prepared SELECT", err)
			return
		}
		_, err = pool.Exec(ctx, "INSERT INTO orders (item) VALUES ('"+secretPgLiteral+"')",
			pgx.QueryExecModeSimpleProtocol)
		if err != nil {
			unreachable(w, "INSERT with a literal", err)
			return
		}
		if _, err := pool.Exec(ctx, "INSERT INTO orders (item) VALUES ($1)", secretPgParam); err != nil {
			unreachable(w, "INSERT with a parameter", err)
			return
		}
		err = pool.QueryRow(ctx, "SELECT item FROM missing_orders WHERE id = $1", 1).Scan(&item)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42P01" {
			unreachable(w, "SELECT of a missing table (42P01 expected)", err)
			return
		}
		fmt.Fprintln(w, "pg: SELECT plain and prepared, INSERT twice, SELECT refused with 42P01")
	}
}

package main

import (
	"database/sql"
	"errors"
	"fmt"
	"net/http"

	"github.com/go-sql-driver/mysql"
)

// mysqlHandler: a plain query with a literal (COM_QUERY), the same through a prepared
// statement (COM_STMT_PREPARE, COM_STMT_EXECUTE, COM_STMT_CLOSE), an INSERT with a literal
// and a query of a table that does not exist (error 1146).
func mysqlHandler(db *sql.DB) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		var id int
		var name string
		if err := db.QueryRowContext(ctx, "SELECT id, name FROM users WHERE id = 1").Scan(&id, &name); err != nil {
			unreachable(w, "plain SELECT", err)
			return
		}
		stmt, err := db.PrepareContext(ctx, "SELECT name FROM users WHERE id = ?")
		if err != nil {
			unreachable(w, "prepare", err)
			return
		}
		err = stmt.QueryRowContext(ctx, 1).Scan(&name)
		stmt.Close()
		if err != nil {
			unreachable(w, "prepared SELECT", err)
			return
		}
		if _, err := db.ExecContext(ctx, "INSERT INTO users (name) VALUES ('"+secretMySQLValue+"')"); err != nil {
			unreachable(w, "INSERT", err)
			return
		}
		err = db.QueryRowContext(ctx, "SELECT name FROM missing_users WHERE id = 1").Scan(&name)
		var myErr *mysql.MySQLError
		if !errors.As(err, &myErr) || myErr.Number != 1146 {
			unreachable(w, "SELECT of a missing table (1146 expected)", err)
			return
		}
		fmt.Fprintln(w, "mysql: SELECT plain and prepared, INSERT, SELECT refused with 1146")
	}
}

// db-shop: a net/http server whose handlers call databases, for wirespan's database spans.
// /redis talks to Redis through go-redis (SET, GET, a pipeline of HSET, HGET and DEL, and an
// LPUSH on a string key that Redis answers with WRONGTYPE), /pg to PostgreSQL through pgx (a
// plain query with a literal over the simple protocol, a parameterised one over the extended
// protocol (a named, cached prepared statement), two INSERTs and a query of a missing table:
// SQLSTATE 42P01), /mysql to MySQL or MariaDB through go-sql-driver/mysql (a plain COM_QUERY,
// a prepared statement, an INSERT and a query of a missing table: error 1146).
//
// Every value it writes contains "db-shop-secret": a span attribute that carries it leaked a
// value. A handler answers 200 when its calls ran (the intended errors included), 502 when
// its server cannot be reached or answers something else, 503 when no server is configured.
// It prints its listening address on its first line.
//
//	db-shop -listen 127.0.0.1:0 -redis 127.0.0.1:6379 \
//	  -pg 'postgres://postgres@127.0.0.1:5432/shop?sslmode=disable' \
//	  -mysql 'root@tcp(127.0.0.1:3306)/shop'
//
// The servers need a table orders (id serial primary key, item text) and a table users
// (id int auto_increment primary key, name text), each with a row of id 1.
package main

import (
	"database/sql"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
)

// The values the handlers write: no span attribute may contain them.
const (
	secretRedis      = "db-shop-secret-redis"
	secretRedisHash  = "db-shop-secret-redis-hash"
	secretRedisList  = "db-shop-secret-redis-list"
	secretPgLiteral  = "db-shop-secret-pg-literal"
	secretPgParam    = "db-shop-secret-pg-param"
	secretMySQLValue = "db-shop-secret-mysql"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:0", "address to serve on")
	redisAddr := flag.String("redis", os.Getenv("DB_SHOP_REDIS"), "Redis host:port (default $DB_SHOP_REDIS)")
	pgURL := flag.String("pg", os.Getenv("DB_SHOP_PG"), "PostgreSQL URL, e.g. postgres://user@host:port/db?sslmode=disable (default $DB_SHOP_PG)")
	mysqlDSN := flag.String("mysql", os.Getenv("DB_SHOP_MYSQL"), "MySQL DSN, e.g. user@tcp(host:port)/db (default $DB_SHOP_MYSQL)")
	flag.Parse()

	mux := http.NewServeMux()
	redisRoute, pgRoute, mysqlRoute := notConfigured("redis"), notConfigured("pg"), notConfigured("mysql")
	if *redisAddr != "" {
		redisRoute = redisHandler(newRedis(*redisAddr))
	}
	if *pgURL != "" {
		pool, err := newPg(*pgURL)
		if err != nil {
			log.Fatalf("-pg %q: %v", *pgURL, err)
		}
		pgRoute = pgHandler(pool)
	}
	if *mysqlDSN != "" {
		// Opening makes no connection: the first request's handler makes it.
		db, err := sql.Open("mysql", *mysqlDSN)
		if err != nil {
			log.Fatalf("-mysql %q: %v", *mysqlDSN, err)
		}
		mysqlRoute = mysqlHandler(db)
	}
	mux.HandleFunc("/redis", redisRoute)
	mux.HandleFunc("/pg", pgRoute)
	mux.HandleFunc("/mysql", mysqlRoute)

	listener, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Fprintln(os.Stdout, listener.Addr().String())
	log.Fatal(http.Serve(listener, mux))
}

// notConfigured answers 503: the handler's server was not given.
func notConfigured(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "no -"+name+" server configured", http.StatusServiceUnavailable)
	}
}

// unreachable answers 502 with what failed.
func unreachable(w http.ResponseWriter, what string, err error) {
	http.Error(w, fmt.Sprintf("%s: %v", what, err), http.StatusBadGateway)
}

package main

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/redis/go-redis/v9"
)

// newRedis makes a client whose pool connects on first use (RESP3, go-redis's default: each
// new connection starts with HELLO 3). CLIENT SETINFO at connect is left out.
func newRedis(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, DisableIdentity: true})
}

// redisHandler: SET, GET, a pipeline of three commands in one write, and an LPUSH on the
// string key, which Redis refuses with WRONGTYPE.
func redisHandler(rdb *redis.Client) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		if err := rdb.Set(ctx, "shop:greeting", secretRedis, 0).Err(); err != nil {
			unreachable(w, "SET", err)
			return
		}
		got, err := rdb.Get(ctx, "shop:greeting").Result()
		if err != nil {
			unreachable(w, "GET", err)
			return
		}
		if got != secretRedis {
			unreachable(w, "GET", fmt.Errorf("read %q back", got))
			return
		}
		pipe := rdb.Pipeline()
		pipe.HSet(ctx, "shop:cart", "item", secretRedisHash)
		pipe.HGet(ctx, "shop:cart", "item")
		pipe.Del(ctx, "shop:cart")
		if _, err := pipe.Exec(ctx); err != nil {
			unreachable(w, "pipeline", err)
			return
		}
		err = rdb.LPush(ctx, "shop:greeting", secretRedisList).Err()
		var redisErr redis.Error
		if !errors.As(err, &redisErr) || !strings.HasPrefix(redisErr.Error(), "WRONGTYPE") {
			unreachable(w, "LPUSH (a WRONGTYPE error expected)", err)
			return
		}
		fmt.Fprintln(w, "redis: SET, GET, pipeline HSET HGET DEL, LPUSH refused with WRONGTYPE")
	}
}

package main

// The drivers linked into the daemon. Each registers itself from its
// package's init (conncache.Register, flush.Register), as database/sql
// drivers do, and config names it: cache.driver, storage.driver. To use
// a driver of your own, add its blank import here and rebuild.
import (
	_ "github.com/chihaya/chihaya/conncache/redis" // cache.driver = "redis"
	_ "github.com/chihaya/chihaya/flush/postgres"  // storage.driver = "postgres"
)

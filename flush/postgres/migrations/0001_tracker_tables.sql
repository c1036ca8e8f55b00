-- Tables the tracker owns and writes; the web application reads them.
-- Counters are bigint: bytes need 64 bits, and the tracker never writes
-- a negative value (its sums saturate at 2^63 - 1).

-- One row per running tracker process: its heartbeat. stale_after is
-- written by the process itself (flush.Config.StaleAfter).
CREATE TABLE chihaya_processes (
	id          uuid        PRIMARY KEY,
	started_at  timestamptz NOT NULL,
	last_flush  timestamptz NOT NULL,
	stale_after interval    NOT NULL
);

-- Absolute swarm counts as one process sees them. A process's rows go
-- with its heartbeat row when it shuts down or is reaped as dead.
CREATE TABLE chihaya_swarms (
	process       uuid        NOT NULL REFERENCES chihaya_processes (id) ON DELETE CASCADE,
	info_hash     bytea       NOT NULL CHECK (length(info_hash) = 20),
	seeders       bigint      NOT NULL CHECK (seeders >= 0),
	leechers      bigint      NOT NULL CHECK (leechers >= 0),
	completed     bigint      NOT NULL CHECK (completed >= 0),
	last_activity timestamptz NOT NULL,
	PRIMARY KEY (process, info_hash)
) WITH (fillfactor = 70); -- room for HOT updates: most flushes rewrite counts
CREATE INDEX chihaya_swarms_info_hash ON chihaya_swarms (info_hash);

-- Per-torrent counts summed over the processes whose heartbeat is fresh.
CREATE VIEW chihaya_torrent_stats AS
SELECT s.info_hash,
       sum(s.seeders)::bigint   AS seeders,
       sum(s.leechers)::bigint  AS leechers,
       sum(s.completed)::bigint AS completed,
       max(s.last_activity)     AS last_activity
FROM chihaya_swarms s
JOIN chihaya_processes p ON p.id = s.process
WHERE p.last_flush > now() - p.stale_after
GROUP BY s.info_hash;

-- Private mode: what each user did on each torrent, and in total. Only
-- ever added to.
CREATE TABLE chihaya_user_torrents (
	user_id    bigint NOT NULL,
	torrent_id bigint NOT NULL,
	uploaded   bigint NOT NULL DEFAULT 0 CHECK (uploaded >= 0),
	downloaded bigint NOT NULL DEFAULT 0 CHECK (downloaded >= 0),
	PRIMARY KEY (user_id, torrent_id)
);

CREATE TABLE chihaya_users_stats (
	user_id    bigint PRIMARY KEY,
	uploaded   bigint NOT NULL DEFAULT 0 CHECK (uploaded >= 0),
	downloaded bigint NOT NULL DEFAULT 0 CHECK (downloaded >= 0),
	snatches   bigint NOT NULL DEFAULT 0 CHECK (snatches >= 0)
);

-- One row per completed download (one per client session and torrent).
CREATE TABLE chihaya_snatches (
	user_id      bigint      NOT NULL,
	torrent_id   bigint      NOT NULL,
	completed_at timestamptz NOT NULL
);
CREATE INDEX chihaya_snatches_user ON chihaya_snatches (user_id, torrent_id);
CREATE INDEX chihaya_snatches_torrent ON chihaya_snatches (torrent_id);

-- Idempotency ledger: a batch (process, seq) is applied in the same
-- transaction that inserts its row here. Each process keeps only its
-- newest row; batches are applied in sequence order.
CREATE TABLE chihaya_flush_batches (
	process    uuid        NOT NULL,
	seq        bigint      NOT NULL,
	applied_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (process, seq)
);

-- table bridge_claim_fences
CREATE TABLE bridge_claim_fences (
	dest_uri VARCHAR(512) NOT NULL, 
	source_id VARCHAR(512) NOT NULL, 
	token BIGINT NOT NULL, 
	holder VARCHAR(256) NOT NULL, 
	PRIMARY KEY (dest_uri, source_id)
);
-- table bridge_claims
CREATE TABLE bridge_claims (
	dest_uri VARCHAR(512) NOT NULL, 
	source_id VARCHAR(512) NOT NULL, 
	holder VARCHAR(256) NOT NULL, 
	taken_at FLOAT NOT NULL, 
	heartbeat FLOAT NOT NULL, 
	PRIMARY KEY (dest_uri, source_id)
);
-- table bridge_conflicts
CREATE TABLE bridge_conflicts (
	id INTEGER NOT NULL, 
	dest_uri VARCHAR(512) NOT NULL, 
	source_id VARCHAR(512) NOT NULL, 
	field VARCHAR(512) NOT NULL, 
	source_value TEXT, 
	dest_value TEXT, 
	synced_value TEXT, 
	detected_at FLOAT NOT NULL, 
	resolved BOOLEAN NOT NULL, 
	PRIMARY KEY (id)
);
-- table bridge_content_digests
CREATE TABLE bridge_content_digests (
	stat_key VARCHAR(64) NOT NULL, 
	md5 VARCHAR(64) NOT NULL, 
	PRIMARY KEY (stat_key)
);
-- table bridge_cycles
CREATE TABLE bridge_cycles (
	id INTEGER NOT NULL, 
	source_uri VARCHAR(512) NOT NULL, 
	dest_uri VARCHAR(512) NOT NULL, 
	started_at FLOAT NOT NULL, 
	ended_at FLOAT, 
	result INTEGER, 
	skipped TEXT, 
	counts TEXT, 
	errors TEXT, 
	host VARCHAR(256), 
	pid INTEGER, 
	PRIMARY KEY (id)
);
-- table bridge_editable
CREATE TABLE bridge_editable (
	dest_uri VARCHAR(512) NOT NULL, 
	source_id VARCHAR(512) NOT NULL, 
	field VARCHAR(512) NOT NULL, 
	value TEXT, 
	PRIMARY KEY (dest_uri, source_id, field)
);
-- table bridge_files
CREATE TABLE bridge_files (
	dest_uri VARCHAR(512) NOT NULL, 
	source_id VARCHAR(512) NOT NULL, 
	path VARCHAR(1024) NOT NULL, 
	digest VARCHAR(256) NOT NULL, 
	PRIMARY KEY (dest_uri, source_id, path)
);
-- table bridge_items
CREATE TABLE bridge_items (
	dest_uri VARCHAR(512) NOT NULL, 
	source_id VARCHAR(512) NOT NULL, 
	kind VARCHAR(32) NOT NULL, 
	dest_id VARCHAR(512) NOT NULL, 
	fingerprint VARCHAR(256) NOT NULL, 
	digest VARCHAR(128), 
	PRIMARY KEY (dest_uri, source_id)
);
-- table bridge_model_aliases
CREATE TABLE bridge_model_aliases (
	dest_uri VARCHAR(512) NOT NULL, 
	model_source_id VARCHAR(512) NOT NULL, 
	alias VARCHAR(256) NOT NULL, 
	source_version VARCHAR(512), 
	dest_version VARCHAR(64), 
	PRIMARY KEY (dest_uri, model_source_id, alias)
);
-- table bridge_model_versions
CREATE TABLE bridge_model_versions (
	dest_uri VARCHAR(512) NOT NULL, 
	source_id VARCHAR(512) NOT NULL, 
	model_name VARCHAR(512) NOT NULL, 
	dest_version VARCHAR(64) NOT NULL, 
	PRIMARY KEY (dest_uri, source_id)
);
-- table bridge_objects
CREATE TABLE bridge_objects (
	dest_uri VARCHAR(512) NOT NULL, 
	source_id VARCHAR(512) NOT NULL, 
	location VARCHAR(1024) NOT NULL, 
	PRIMARY KEY (dest_uri, source_id)
);
-- table bridge_pair_filters
CREATE TABLE bridge_pair_filters (
	source_uri VARCHAR(512) NOT NULL, 
	dest_uri VARCHAR(512) NOT NULL, 
	filters TEXT NOT NULL, 
	synced_at FLOAT NOT NULL, 
	PRIMARY KEY (source_uri, dest_uri)
);
-- table bridge_pair_runs
CREATE TABLE bridge_pair_runs (
	source_uri VARCHAR(512) NOT NULL, 
	dest_uri VARCHAR(512) NOT NULL, 
	source_id VARCHAR(512) NOT NULL, 
	first_seen FLOAT NOT NULL, 
	deleted_at FLOAT, 
	PRIMARY KEY (source_uri, dest_uri, source_id)
);
-- table bridge_parent_links
CREATE TABLE bridge_parent_links (
	dest_uri VARCHAR(512) NOT NULL, 
	source_id VARCHAR(512) NOT NULL, 
	parent_source_id VARCHAR(512) NOT NULL, 
	PRIMARY KEY (dest_uri, source_id)
);
-- table bridge_pass_open
CREATE TABLE bridge_pass_open (
	source_uri VARCHAR(512) NOT NULL, 
	dest_uri VARCHAR(512) NOT NULL, 
	shard_count INTEGER NOT NULL, 
	pass_id VARCHAR(128) NOT NULL, 
	PRIMARY KEY (source_uri, dest_uri, shard_count)
);
-- table bridge_pass_shards
CREATE TABLE bridge_pass_shards (
	pass_id VARCHAR(128) NOT NULL, 
	shard INTEGER NOT NULL, 
	holder VARCHAR(256) NOT NULL, 
	started_at FLOAT NOT NULL, 
	heartbeat FLOAT NOT NULL, 
	ended_at FLOAT, 
	result INTEGER, 
	counts TEXT, 
	errors TEXT, 
	PRIMARY KEY (pass_id, shard)
);
-- table bridge_passes
CREATE TABLE bridge_passes (
	pass_id VARCHAR(128) NOT NULL, 
	source_uri VARCHAR(512) NOT NULL, 
	dest_uri VARCHAR(512) NOT NULL, 
	shard_count INTEGER NOT NULL, 
	started_at FLOAT NOT NULL, 
	final_state VARCHAR(16), 
	final_holder VARCHAR(256), 
	final_at FLOAT, 
	incomplete TEXT, 
	PRIMARY KEY (pass_id)
);
-- table bridge_resolutions
CREATE TABLE bridge_resolutions (
	id INTEGER NOT NULL, 
	conflict_id INTEGER, 
	dest_uri VARCHAR(512) NOT NULL, 
	source_id VARCHAR(512) NOT NULL, 
	field VARCHAR(512) NOT NULL, 
	choice VARCHAR(16) NOT NULL, 
	source_value TEXT, 
	dest_value TEXT, 
	resolved_by VARCHAR(256) NOT NULL, 
	resolved_at FLOAT NOT NULL, 
	note TEXT, 
	PRIMARY KEY (id)
);
-- table bridge_runs
CREATE TABLE bridge_runs (
	dest_uri VARCHAR(512) NOT NULL, 
	source_id VARCHAR(512) NOT NULL, 
	dest_id VARCHAR(128) NOT NULL, 
	project_dest_id VARCHAR(128) NOT NULL, 
	fingerprint VARCHAR(128), 
	complete BOOLEAN NOT NULL, 
	written_params TEXT, 
	written_tags TEXT, 
	updated_at FLOAT NOT NULL, 
	PRIMARY KEY (dest_uri, source_id)
);
-- table bridge_stream_digests
CREATE TABLE bridge_stream_digests (
	dest_uri VARCHAR(512) NOT NULL, 
	source_id VARCHAR(512) NOT NULL, 
	"key" VARCHAR(512) NOT NULL, 
	points BIGINT NOT NULL, 
	digest VARCHAR(16) NOT NULL, 
	PRIMARY KEY (dest_uri, source_id, "key")
);
-- table bridge_streams
CREATE TABLE bridge_streams (
	dest_uri VARCHAR(512) NOT NULL, 
	source_id VARCHAR(512) NOT NULL, 
	"key" VARCHAR(512) NOT NULL, 
	points BIGINT NOT NULL, 
	PRIMARY KEY (dest_uri, source_id, "key")
);
-- index bridge_conflicts_one_open
CREATE UNIQUE INDEX bridge_conflicts_one_open ON bridge_conflicts (dest_uri, source_id, field, ifnull(source_value, ''), (source_value IS NULL), ifnull(dest_value, ''), (dest_value IS NULL)) WHERE NOT resolved;
-- index ix_bridge_claims_holder
CREATE INDEX ix_bridge_claims_holder ON bridge_claims (holder);
-- index ix_bridge_conflicts_run
CREATE INDEX ix_bridge_conflicts_run ON bridge_conflicts (dest_uri, source_id);
-- index ix_bridge_cycles_pair
CREATE INDEX ix_bridge_cycles_pair ON bridge_cycles (source_uri, dest_uri);
-- index ix_bridge_resolutions_run
CREATE INDEX ix_bridge_resolutions_run ON bridge_resolutions (dest_uri, source_id);

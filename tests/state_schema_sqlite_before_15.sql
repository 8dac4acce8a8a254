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

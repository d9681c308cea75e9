package sqlite

// migrations is the ordered list of schema changes; migrations[i] brings the
// schema from version i to version i+1. Append only: never edit a migration
// that has shipped.
//
// Hierarchy: patient 1-n study 1-n series 1-n instance. Counts at each level
// (num_studies, num_series, num_instances) are kept by triggers, which also
// move counts when a series changes study or a study changes patient. Parents
// left empty by a delete or a move are removed by triggers too, children
// before parents, so foreign keys hold at every statement.
//
// Strings are stored as ” when absent, never NULL, so that identity columns
// (patient_id, issuer_of_patient_id) compare with '='. *_norm columns hold
// store.NormalizePN of the PN next to them for case-insensitive matching
// (GLOB 'DOE*' on the upper-cased pattern uses the index).
var migrations = []string{
	// 1: initial schema
	`
CREATE TABLE patient (
	pk                     INTEGER PRIMARY KEY,
	patient_id             TEXT NOT NULL,
	issuer_of_patient_id   TEXT NOT NULL,
	patient_name           TEXT NOT NULL,
	patient_name_norm      TEXT NOT NULL,
	patient_birth_date     TEXT NOT NULL,
	patient_sex            TEXT NOT NULL,
	num_studies            INTEGER NOT NULL DEFAULT 0,
	num_series             INTEGER NOT NULL DEFAULT 0,
	num_instances          INTEGER NOT NULL DEFAULT 0,
	updated_at             INTEGER NOT NULL,
	UNIQUE (patient_id, issuer_of_patient_id)
);
CREATE INDEX patient_name_norm_idx ON patient (patient_name_norm);
CREATE INDEX patient_birth_date_idx ON patient (patient_birth_date);

CREATE TABLE study (
	pk                            INTEGER PRIMARY KEY,
	patient_fk                    INTEGER NOT NULL REFERENCES patient (pk),
	study_instance_uid            TEXT NOT NULL UNIQUE,
	study_date                    TEXT NOT NULL,
	study_time                    TEXT NOT NULL,
	accession_number              TEXT NOT NULL,
	study_id                      TEXT NOT NULL,
	study_description             TEXT NOT NULL,
	referring_physician_name      TEXT NOT NULL,
	referring_physician_name_norm TEXT NOT NULL,
	num_series                    INTEGER NOT NULL DEFAULT 0,
	num_instances                 INTEGER NOT NULL DEFAULT 0,
	updated_at                    INTEGER NOT NULL
);
CREATE INDEX study_patient_fk_idx ON study (patient_fk);
CREATE INDEX study_date_idx ON study (study_date, study_time);
CREATE INDEX study_accession_number_idx ON study (accession_number);
CREATE INDEX study_referring_physician_name_norm_idx ON study (referring_physician_name_norm);

CREATE TABLE series (
	pk                                  INTEGER PRIMARY KEY,
	study_fk                            INTEGER NOT NULL REFERENCES study (pk),
	series_instance_uid                 TEXT NOT NULL UNIQUE,
	modality                            TEXT NOT NULL,
	series_number                       TEXT NOT NULL,
	series_description                  TEXT NOT NULL,
	series_date                         TEXT NOT NULL,
	series_time                         TEXT NOT NULL,
	body_part_examined                  TEXT NOT NULL,
	performed_procedure_step_start_date TEXT NOT NULL,
	num_instances                       INTEGER NOT NULL DEFAULT 0,
	updated_at                          INTEGER NOT NULL
);
CREATE INDEX series_study_fk_idx ON series (study_fk);
CREATE INDEX series_modality_idx ON series (modality);

CREATE TABLE instance (
	pk                     INTEGER PRIMARY KEY,
	series_fk              INTEGER NOT NULL REFERENCES series (pk),
	sop_instance_uid       TEXT NOT NULL UNIQUE,
	sop_class_uid          TEXT NOT NULL,
	transfer_syntax_uid    TEXT NOT NULL,
	instance_number        TEXT NOT NULL,
	content_date           TEXT NOT NULL,
	content_time           TEXT NOT NULL,
	number_of_frames       TEXT NOT NULL,
	rows                   INTEGER NOT NULL,
	columns                INTEGER NOT NULL,
	specific_character_set TEXT NOT NULL,
	charset_unsupported    INTEGER NOT NULL,
	source_aet             TEXT NOT NULL,
	source_addr            TEXT NOT NULL,
	received_at            INTEGER, -- Unix nanoseconds UTC; NULL for the zero time
	blob_key               TEXT NOT NULL UNIQUE,
	size                   INTEGER NOT NULL
);
CREATE INDEX instance_series_fk_idx ON instance (series_fk);
CREATE INDEX instance_sop_class_uid_idx ON instance (sop_class_uid);

-- Blobs replaced or deleted whose files may still exist.
CREATE TABLE pending_blob_deletes (
	blob_key    TEXT PRIMARY KEY,
	recorded_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Counts. A count column is only ever changed here.
CREATE TRIGGER instance_ai AFTER INSERT ON instance BEGIN
	UPDATE series SET num_instances = num_instances + 1 WHERE pk = NEW.series_fk;
	UPDATE study SET num_instances = num_instances + 1
		WHERE pk = (SELECT study_fk FROM series WHERE pk = NEW.series_fk);
	UPDATE patient SET num_instances = num_instances + 1
		WHERE pk = (SELECT st.patient_fk FROM series se JOIN study st ON st.pk = se.study_fk WHERE se.pk = NEW.series_fk);
END;

CREATE TRIGGER instance_ad AFTER DELETE ON instance BEGIN
	UPDATE series SET num_instances = num_instances - 1 WHERE pk = OLD.series_fk;
	UPDATE study SET num_instances = num_instances - 1
		WHERE pk = (SELECT study_fk FROM series WHERE pk = OLD.series_fk);
	UPDATE patient SET num_instances = num_instances - 1
		WHERE pk = (SELECT st.patient_fk FROM series se JOIN study st ON st.pk = se.study_fk WHERE se.pk = OLD.series_fk);
	DELETE FROM series WHERE pk = OLD.series_fk AND num_instances = 0;
END;

CREATE TRIGGER instance_au_series AFTER UPDATE OF series_fk ON instance
WHEN OLD.series_fk IS NOT NEW.series_fk BEGIN
	UPDATE series SET num_instances = num_instances - 1 WHERE pk = OLD.series_fk;
	UPDATE study SET num_instances = num_instances - 1
		WHERE pk = (SELECT study_fk FROM series WHERE pk = OLD.series_fk);
	UPDATE patient SET num_instances = num_instances - 1
		WHERE pk = (SELECT st.patient_fk FROM series se JOIN study st ON st.pk = se.study_fk WHERE se.pk = OLD.series_fk);
	UPDATE series SET num_instances = num_instances + 1 WHERE pk = NEW.series_fk;
	UPDATE study SET num_instances = num_instances + 1
		WHERE pk = (SELECT study_fk FROM series WHERE pk = NEW.series_fk);
	UPDATE patient SET num_instances = num_instances + 1
		WHERE pk = (SELECT st.patient_fk FROM series se JOIN study st ON st.pk = se.study_fk WHERE se.pk = NEW.series_fk);
	DELETE FROM series WHERE pk = OLD.series_fk AND num_instances = 0;
END;

CREATE TRIGGER series_ai AFTER INSERT ON series BEGIN
	UPDATE study SET num_series = num_series + 1, num_instances = num_instances + NEW.num_instances
		WHERE pk = NEW.study_fk;
	UPDATE patient SET num_series = num_series + 1, num_instances = num_instances + NEW.num_instances
		WHERE pk = (SELECT patient_fk FROM study WHERE pk = NEW.study_fk);
END;

CREATE TRIGGER series_ad AFTER DELETE ON series BEGIN
	UPDATE study SET num_series = num_series - 1, num_instances = num_instances - OLD.num_instances
		WHERE pk = OLD.study_fk;
	UPDATE patient SET num_series = num_series - 1, num_instances = num_instances - OLD.num_instances
		WHERE pk = (SELECT patient_fk FROM study WHERE pk = OLD.study_fk);
	DELETE FROM study WHERE pk = OLD.study_fk AND num_series = 0;
END;

CREATE TRIGGER series_au_study AFTER UPDATE OF study_fk ON series
WHEN OLD.study_fk IS NOT NEW.study_fk BEGIN
	UPDATE study SET num_series = num_series - 1, num_instances = num_instances - OLD.num_instances
		WHERE pk = OLD.study_fk;
	UPDATE patient SET num_series = num_series - 1, num_instances = num_instances - OLD.num_instances
		WHERE pk = (SELECT patient_fk FROM study WHERE pk = OLD.study_fk);
	UPDATE study SET num_series = num_series + 1, num_instances = num_instances + NEW.num_instances
		WHERE pk = NEW.study_fk;
	UPDATE patient SET num_series = num_series + 1, num_instances = num_instances + NEW.num_instances
		WHERE pk = (SELECT patient_fk FROM study WHERE pk = NEW.study_fk);
	DELETE FROM study WHERE pk = OLD.study_fk AND num_series = 0;
END;

CREATE TRIGGER study_ai AFTER INSERT ON study BEGIN
	UPDATE patient SET num_studies = num_studies + 1, num_series = num_series + NEW.num_series,
		num_instances = num_instances + NEW.num_instances
		WHERE pk = NEW.patient_fk;
END;

CREATE TRIGGER study_ad AFTER DELETE ON study BEGIN
	UPDATE patient SET num_studies = num_studies - 1, num_series = num_series - OLD.num_series,
		num_instances = num_instances - OLD.num_instances
		WHERE pk = OLD.patient_fk;
	DELETE FROM patient WHERE pk = OLD.patient_fk AND num_studies = 0;
END;

CREATE TRIGGER study_au_patient AFTER UPDATE OF patient_fk ON study
WHEN OLD.patient_fk IS NOT NEW.patient_fk BEGIN
	UPDATE patient SET num_studies = num_studies - 1, num_series = num_series - OLD.num_series,
		num_instances = num_instances - OLD.num_instances
		WHERE pk = OLD.patient_fk;
	UPDATE patient SET num_studies = num_studies + 1, num_series = num_series + NEW.num_series,
		num_instances = num_instances + NEW.num_instances
		WHERE pk = NEW.patient_fk;
	DELETE FROM patient WHERE pk = OLD.patient_fk AND num_studies = 0;
END;
`,
	// 2: query/retrieve. Case-sensitive PN matching (Query.PNCaseSensitive)
	// searches the raw name; the case-insensitive default uses *_norm.
	`
CREATE INDEX patient_name_idx ON patient (patient_name);
`,
	// 3: blob checksums (store.Instance.Checksum), verified at recovery.
	`
ALTER TABLE instance ADD COLUMN blob_checksum TEXT NOT NULL DEFAULT '';
`,
	// 4: sequence matching (store.SequenceSpec). One row per kept item
	// attribute of a sequence held by a patient (level 0), study (1) or
	// series (2) row; the writer replaces an owner's rows with those of the
	// newest instance, and triggers remove them with the owner. The index
	// serves matching: attribute, item keyword and value, then the owner.
	`
CREATE TABLE sequence_value (
	level     INTEGER NOT NULL,
	owner_fk  INTEGER NOT NULL,
	attribute TEXT NOT NULL,
	item      INTEGER NOT NULL,
	keyword   TEXT NOT NULL,
	value     TEXT NOT NULL,
	PRIMARY KEY (level, owner_fk, attribute, item, keyword)
) WITHOUT ROWID;
CREATE INDEX sequence_value_match_idx ON sequence_value (attribute, keyword, value, level);

CREATE TRIGGER patient_ad_sequence AFTER DELETE ON patient BEGIN
	DELETE FROM sequence_value WHERE level = 0 AND owner_fk = OLD.pk;
END;
CREATE TRIGGER study_ad_sequence AFTER DELETE ON study BEGIN
	DELETE FROM sequence_value WHERE level = 1 AND owner_fk = OLD.pk;
END;
CREATE TRIGGER series_ad_sequence AFTER DELETE ON series BEGIN
	DELETE FROM sequence_value WHERE level = 2 AND owner_fk = OLD.pk;
END;
`,
	// 5: deletions of many instances, committed with a note the caller
	// reads back until it has audited them (store.DeletionRecorder).
	`
CREATE TABLE recorded_deletion (
	pk          INTEGER PRIMARY KEY,
	note        BLOB NOT NULL,
	recorded_at INTEGER NOT NULL
);
`,
	// 6: holds on blob deletion, each by a node until it lapses
	// (store.DeleteHolder).
	`
CREATE TABLE delete_hold (
	pk         INTEGER PRIMARY KEY,
	node       TEXT NOT NULL,
	expires_at INTEGER NOT NULL
);
`,
	// 7: each instance's metadata (store.MetadataKeeper), in a table of
	// its own so that the instance rows that queries scan stay small. A
	// row of instance that is replaced (any update: Put of the same SOP
	// Instance UID) or deleted loses it.
	`
CREATE TABLE instance_metadata (
	instance_fk INTEGER PRIMARY KEY,
	metadata    BLOB NOT NULL
);
CREATE TRIGGER instance_ad_metadata AFTER DELETE ON instance BEGIN
	DELETE FROM instance_metadata WHERE instance_fk = OLD.pk;
END;
CREATE TRIGGER instance_au_metadata AFTER UPDATE ON instance BEGIN
	DELETE FROM instance_metadata WHERE instance_fk = OLD.pk;
END;
`,
}

// Package sampledata makes a small CRM-like database (contacts, leads,
// opportunities) for the quick start, the tests and the benchmarks.
package sampledata

import "fmt"

// Schema creates the tables. leads.contact_id is a soft reference (no foreign
// key), as in many real schemas; opportunities.lead_id is a real foreign key.
const Schema = `
CREATE TABLE contacts (
    id         bigint PRIMARY KEY,
    email      text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE leads (
    id         bigint PRIMARY KEY,
    contact_id bigint,
    source     text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE opportunities (
    id         bigint PRIMARY KEY,
    lead_id    bigint NOT NULL REFERENCES leads(id),
    amount     numeric(12,2) NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX ON leads (created_at);
`

// Fill returns SQL that inserts rows contacts, about 2×rows leads and rows/2
// opportunities, the newest created just before now. It is deterministic for
// a given rows.
func Fill(rows int) string {
	return fmt.Sprintf(`
SELECT setseed(0.42);
INSERT INTO contacts
  SELECT g, 'contact' || g || '@example.com', now() - (%[1]d - g) * interval '1 second'
  FROM generate_series(1, %[1]d) g;
INSERT INTO leads
  SELECT g, 1 + (g %% %[1]d), (ARRAY['web','referral','event','partner'])[1 + g %% 4],
         now() - (2 * %[1]d - g) * interval '500 milliseconds'
  FROM generate_series(1, 2 * %[1]d) g;
INSERT INTO opportunities
  SELECT g, 1 + (g * 3) %% (2 * %[1]d), round((random() * 100000)::numeric, 2),
         now() - (%[1]d / 2 - g) * interval '2 seconds'
  FROM generate_series(1, %[1]d / 2) g;
ANALYZE;
`, rows)
}

// Tables lists the sample tables, parents first.
var Tables = []string{"contacts", "leads", "opportunities"}

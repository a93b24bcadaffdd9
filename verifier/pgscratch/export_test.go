package pgscratch

import "github.com/backupverify/backupverify/verifier"

// Password is the drill role's password of a server scratch database.
func Password(db verifier.ScratchDB) string { return db.(*scratchDB).password }

// ClusterOf is the cluster of an embedded scratch database.
func ClusterOf(db verifier.ScratchDB) *Cluster { return db.(*scratchDB).cluster }

// TemplateKey is the key a template of bins must carry.
func TemplateKey(bins Bins) (string, error) { return templateKey(bins, superuser) }

// SpareDir is the folder of e's spare cluster.
func SpareDir(e *Embedded) string { return e.spareDir() }

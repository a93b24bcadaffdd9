package verifier

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Backup is a backup found in a listing, with where its checksum is expected.
type Backup struct {
	Object
	// ChecksumKind is how the checksum is found: manifest, sidecar, s3 or none.
	ChecksumKind string
	// ChecksumKey is the manifest or sidecar key; "" when that file is not listed.
	ChecksumKey string
	// ChecksumModified is the LastModified of the manifest or sidecar.
	ChecksumModified time.Time
	// ChecksumETag is the ETag of the manifest or sidecar: it changes
	// whenever that file is rewritten, also within the same second.
	ChecksumETag string
}

// ID identifies one version of a backup: a new ETag on the same key (a
// latest/ prefix overwritten in place) is a new backup.
func (b Backup) ID() string { return b.Key + "@" + b.ETag }

// Discover picks the backups out of a listing, newest first. A manifest
// (CHECKSUM beside the dump) or sidecar (dump.sha256) is matched to each.
func Discover(objs []Object, t *Target, match *regexp.Regexp) []Backup {
	byKey := make(map[string]Object, len(objs))
	for _, o := range objs {
		byKey[o.Key] = o
	}
	var out []Backup
	for _, o := range objs {
		if !match.MatchString(o.Key) || strings.HasSuffix(o.Key, ".sha256") || path.Base(o.Key) == t.Manifest {
			continue
		}
		b := Backup{Object: o}
		manifest := path.Join(path.Dir(o.Key), t.Manifest)
		if path.Dir(o.Key) == "." {
			manifest = t.Manifest
		}
		m, hasManifest := byKey[manifest]
		s, hasSidecar := byKey[o.Key+".sha256"]
		mode := t.Checksum
		if mode == ChecksumAuto {
			switch {
			case hasManifest:
				mode = ChecksumManifest
			case hasSidecar:
				mode = ChecksumSidecar
			default:
				mode = ChecksumS3
			}
		}
		b.ChecksumKind = mode
		switch {
		case mode == ChecksumManifest && hasManifest:
			b.ChecksumKey, b.ChecksumModified, b.ChecksumETag = m.Key, m.LastModified, m.ETag
		case mode == ChecksumSidecar && hasSidecar:
			b.ChecksumKey, b.ChecksumModified, b.ChecksumETag = s.Key, s.LastModified, s.ETag
		}
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].LastModified.Equal(out[j].LastModified) {
			return out[i].LastModified.After(out[j].LastModified)
		}
		return out[i].Key > out[j].Key
	})
	return out
}

// errMissingChecksum marks a backup whose checksum cannot be found.
var errMissingChecksum = errors.New("missing checksum")

// maxChecksumFile bounds how much of a manifest or sidecar is read.
const maxChecksumFile = 1 << 20

// expectedChecksum finds the sha256 a backup should have. It returns "" for
// checksum: none, and an error wrapping errMissingChecksum when there is none
// to be found.
func expectedChecksum(ctx context.Context, src Source, b Backup) (sum, from string, err error) {
	switch b.ChecksumKind {
	case ChecksumNone:
		return "", "none", nil
	case ChecksumS3:
		sum, err := src.StoredChecksum(ctx, b.Key)
		if err != nil {
			return "", "", fmt.Errorf("read stored checksum of %s: %w", b.Key, err)
		}
		if sum == "" {
			return "", "", fmt.Errorf("%w: no CHECKSUM manifest, no .sha256 sidecar and no sha256 in the object's metadata for %s", errMissingChecksum, b.Key)
		}
		return sum, "s3 object checksum", nil
	}
	if b.ChecksumKey == "" {
		what := "manifest"
		if b.ChecksumKind == ChecksumSidecar {
			what = b.Key + ".sha256 sidecar"
		}
		return "", "", fmt.Errorf("%w: no %s for %s", errMissingChecksum, what, b.Key)
	}
	body, err := src.Open(ctx, b.ChecksumKey)
	if err != nil {
		return "", "", fmt.Errorf("read %s: %w", b.ChecksumKey, err)
	}
	defer body.Close()
	want := path.Base(b.Key)
	if b.ChecksumKind == ChecksumSidecar {
		want = "" // a sidecar's only line is the one
	}
	sum, err = findSum(io.LimitReader(body, maxChecksumFile), want, b.Key)
	if err != nil {
		return "", "", fmt.Errorf("%s: %w", b.ChecksumKey, err)
	}
	return sum, b.ChecksumKind + " " + b.ChecksumKey, nil
}

var (
	gnuLine = regexp.MustCompile(`^([0-9a-fA-F]{64})(?:\s+\*?(.+?))?\s*$`)
	bsdLine = regexp.MustCompile(`^SHA256 ?\((.+)\) ?= ?([0-9a-fA-F]{64})\s*$`)
)

// findSum reads sha256sum(1) or BSD-style lines and returns the sum for the
// file named want (any line when want is "").
func findSum(r io.Reader, want, key string) (string, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxChecksumFile)
	lines := 0
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		lines++
		var sum, name string
		if m := gnuLine.FindStringSubmatch(line); m != nil {
			sum, name = m[1], m[2]
		} else if m := bsdLine.FindStringSubmatch(line); m != nil {
			sum, name = m[2], m[1]
		} else {
			continue
		}
		if want == "" || path.Base(strings.TrimPrefix(name, "./")) == want || name == key {
			return strings.ToLower(sum), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read checksum file: %w", err)
	}
	if want == "" {
		return "", fmt.Errorf("%w: no sha256 line in the sidecar", errMissingChecksum)
	}
	return "", fmt.Errorf("%w: no entry for %s among %d line(s)", errMissingChecksum, want, lines)
}

package s3source

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// parseListPage reads the parts of a ListBucketResult a listing needs. It
// reads what S3 stores send (a declaration, one root element with
// attributes, child elements without attributes, escaped text) in one pass
// with few allocations, where encoding/xml's reflection was a quarter of a
// fast listing's CPU. Anything else (comments, CDATA, a doctype, attributes
// below the root, an element inside a field) is an error, and the listing
// goes through the SDK. Text that is not plain printable ASCII is decoded by
// encoding/xml itself, so entities, character ranges and line ends read as
// it reads them; FuzzParseListPage checks that every page this accepts,
// encoding/xml reads the same.
func parseListPage(b []byte) (*listPage, error) {
	p := &xmlScan{b: b}
	p.space()
	if bytes.HasPrefix(p.b[p.i:], []byte("<?")) {
		end := bytes.Index(p.b[p.i:], []byte("?>"))
		if end < 0 {
			return nil, errors.New("unterminated declaration")
		}
		decl := p.b[p.i : p.i+end+2]
		if string(decl) != `<?xml version="1.0" encoding="UTF-8"?>` && !declRE.Match(decl) {
			return nil, fmt.Errorf("unsupported declaration %.60q", decl)
		}
		p.i += end + 2
	}
	p.space()
	name, selfClosed, err := p.startTag(true)
	if err != nil {
		return nil, err
	}
	if name != "ListBucketResult" {
		return nil, fmt.Errorf("root element <%s>, not <ListBucketResult>", name)
	}
	page := &listPage{}
	if selfClosed {
		return page, nil
	}
	// path holds the open elements below the root.
	var path []string
	var text []byte
	for {
		t, err := p.text()
		if err != nil {
			return nil, err
		}
		if p.i >= len(p.b) {
			return nil, errors.New("unexpected end of document")
		}
		if p.b[p.i+1] == '/' {
			end, err := p.endTag()
			if err != nil {
				return nil, err
			}
			if len(path) == 0 {
				if _, err := xmlText(t); err != nil {
					return nil, err
				}
				if end != "ListBucketResult" {
					return nil, fmt.Errorf("</%s> closes <ListBucketResult>", end)
				}
				return page, nil
			}
			if end != path[len(path)-1] {
				return nil, fmt.Errorf("</%s> closes <%s>", end, path[len(path)-1])
			}
			text = append(text, t...)
			if err := page.set(path, text); err != nil {
				return nil, err
			}
			path, text = path[:len(path)-1], text[:0]
			continue
		}
		if _, err := xmlText(t); err != nil {
			return nil, err
		}
		if leaf(path) {
			return nil, fmt.Errorf("element inside <%s>", path[len(path)-1])
		}
		name, selfClosed, err := p.startTag(false)
		if err != nil {
			return nil, err
		}
		if len(path) >= maxDepth {
			return nil, fmt.Errorf("elements nested deeper than %d", maxDepth)
		}
		if nearName(name) {
			// The SDK matches names ignoring case; read only exact ones.
			return nil, fmt.Errorf("element <%s>: a field's name in another case", name)
		}
		path = append(path, name)
		if len(path) == 1 && name == "Contents" {
			if len(page.Contents) >= maxPageKeys {
				return nil, fmt.Errorf("more than %d objects in a page", maxPageKeys)
			}
			page.Contents = append(page.Contents, listObject{})
		}
		if selfClosed {
			if err := page.set(path, nil); err != nil {
				return nil, err
			}
			path = path[:len(path)-1]
		}
		text = text[:0]
	}
}

// maxDepth bounds nesting below the root, and maxPageKeys the objects of
// one page (S3 sends at most 1,000): a hostile page costs bounded memory.
const (
	maxDepth    = 16
	maxPageKeys = 10_000
)

// fieldNames are the elements read; nearName says whether name is one of
// them in another case.
var fieldNames = []string{"ListBucketResult", "IsTruncated", "NextContinuationToken", "Contents", "Key", "LastModified", "ETag", "Size"}

func nearName(name string) bool {
	for _, f := range fieldNames {
		if name != f && strings.EqualFold(name, f) {
			return true
		}
	}
	return false
}

// leaf says whether path names a field whose text is read: no element may
// open inside it.
func leaf(path []string) bool {
	switch len(path) {
	case 1:
		return path[0] == "IsTruncated" || path[0] == "NextContinuationToken"
	case 2:
		if path[0] != "Contents" {
			return false
		}
		switch path[1] {
		case "Key", "LastModified", "ETag", "Size":
			return true
		}
	}
	return false
}

// set stores the text of the element path ends with. Values are read as
// strictly as the SDK reads them (it fails a listing on " 5" or an empty
// IsTruncated), and stricter than encoding/xml.
func (page *listPage) set(path []string, raw []byte) error {
	s, err := xmlText(raw)
	if err != nil || !leaf(path) {
		return err
	}
	if len(path) == 1 {
		if path[0] == "IsTruncated" {
			// As the SDK reads it: untrimmed, and never empty.
			page.IsTruncated, err = strconv.ParseBool(s)
			return err
		}
		page.NextContinuationToken = s
		return nil
	}
	o := &page.Contents[len(page.Contents)-1]
	switch path[1] {
	case "Key":
		o.Key = s
	case "LastModified":
		o.LastModified = s
	case "ETag":
		o.ETag = s
	case "Size":
		// Digits only, as the SDK reads a size: no sign, no spaces.
		if s == "" || strings.Trim(s, "0123456789") != "" {
			return fmt.Errorf("bad Size %.20q", s)
		}
		o.Size, err = strconv.ParseInt(s, 10, 64)
	}
	return err
}

// xmlText is an element's text: printable ASCII with the five predefined
// entities (S3 escapes an ETag's quotes as &quot; or &#34;) read here;
// anything else (other references, line ends, other characters) decoded by
// encoding/xml.
func xmlText(raw []byte) (string, error) {
	refs := false
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c == '&' {
			if _, n := entity(raw[i:]); n > 0 {
				refs = true
				i += n - 1
				continue
			}
			return xmlTextSlow(raw)
		}
		if c == ']' || c == '\r' || c >= 0x7f || c < 0x20 && c != '\t' && c != '\n' {
			return xmlTextSlow(raw)
		}
	}
	if !refs {
		return string(raw), nil
	}
	out := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); i++ {
		if raw[i] == '&' {
			c, n := entity(raw[i:])
			out = append(out, c)
			i += n - 1
			continue
		}
		out = append(out, raw[i])
	}
	return string(out), nil
}

// entities are the references xmlText reads itself.
var entities = []struct {
	ref string
	c   byte
}{{"&quot;", '"'}, {"&#34;", '"'}, {"&amp;", '&'}, {"&#38;", '&'}, {"&lt;", '<'}, {"&#60;", '<'},
	{"&gt;", '>'}, {"&#62;", '>'}, {"&apos;", '\''}, {"&#39;", '\''}}

// entity is the character b starts with a reference to, and the
// reference's length; 0 when it is not one of entities.
func entity(b []byte) (byte, int) {
	for _, e := range entities {
		if len(b) >= len(e.ref) && string(b[:len(e.ref)]) == e.ref {
			return e.c, len(e.ref)
		}
	}
	return 0, 0
}

func xmlTextSlow(raw []byte) (string, error) {
	var s string
	doc := make([]byte, 0, len(raw)+7)
	doc = append(append(append(doc, "<a>"...), raw...), "</a>"...)
	if err := xml.Unmarshal(doc, &s); err != nil {
		return "", err
	}
	return s, nil
}

// declRE is the XML declaration read here: version 1.0, UTF-8.
var declRE = regexp.MustCompile(`^<\?xml(\s+version=("1\.0"|'1\.0'))?(\s+encoding=("(?i:utf-8)"|'(?i:utf-8)'))?(\s+standalone=("(yes|no)"|'(yes|no)'))?\s*\?>$`)

// xmlScan walks a document.
type xmlScan struct {
	b []byte
	i int
}

func (p *xmlScan) space() {
	for p.i < len(p.b) && isSpace(p.b[p.i]) {
		p.i++
	}
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// text returns the bytes up to the next tag; p.i is then at its '<', or
// the end.
func (p *xmlScan) text() ([]byte, error) {
	start := p.i
	j := bytes.IndexByte(p.b[p.i:], '<')
	if j < 0 {
		p.i = len(p.b)
		return p.b[start:], nil
	}
	p.i += j
	if p.i+1 >= len(p.b) {
		return nil, errors.New("unexpected end of document")
	}
	if c := p.b[p.i+1]; c == '!' || c == '?' {
		return nil, errors.New("comments, CDATA, doctypes and processing instructions are not read here")
	}
	return p.b[start:p.i], nil
}

// name reads an element name: ASCII letters, digits, '_', '-' and '.',
// not starting with a digit, '-' or '.'.
func (p *xmlScan) name() (string, error) {
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' ||
			p.i > start && (c >= '0' && c <= '9' || c == '-' || c == '.') {
			p.i++
			continue
		}
		break
	}
	if p.i == start {
		return "", fmt.Errorf("bad element name at byte %d", start)
	}
	return string(p.b[start:p.i]), nil
}

// startTag reads <name ...> or <name .../> at p.i; attributes only where
// allowed (the root), each name="value" or name='value' with no '<' or '&'
// in the value.
func (p *xmlScan) startTag(attrs bool) (string, bool, error) {
	if p.i >= len(p.b) || p.b[p.i] != '<' {
		return "", false, errors.New("no element")
	}
	p.i++
	name, err := p.name()
	if err != nil {
		return "", false, err
	}
	for {
		sp := p.i
		p.space()
		if p.i >= len(p.b) {
			return "", false, errors.New("unexpected end of document")
		}
		switch p.b[p.i] {
		case '>':
			p.i++
			return name, false, nil
		case '/':
			if p.i+1 < len(p.b) && p.b[p.i+1] == '>' {
				p.i += 2
				return name, true, nil
			}
			return "", false, fmt.Errorf("bad tag <%s>", name)
		}
		if !attrs || p.i == sp {
			return "", false, fmt.Errorf("attribute in <%s>", name)
		}
		if _, err := p.attrName(); err != nil {
			return "", false, err
		}
		if p.i+1 >= len(p.b) || p.b[p.i] != '=' || p.b[p.i+1] != '"' && p.b[p.i+1] != '\'' {
			return "", false, fmt.Errorf("bad attribute in <%s>", name)
		}
		q := p.b[p.i+1]
		p.i += 2
		end := bytes.IndexByte(p.b[p.i:], q)
		if end < 0 {
			return "", false, errors.New("unexpected end of document")
		}
		for _, c := range p.b[p.i : p.i+end] {
			if c == '<' || c == '&' || c < 0x20 || c >= 0x7f {
				return "", false, fmt.Errorf("attribute value in <%s> not read here", name)
			}
		}
		p.i += end + 1
	}
}

// attrName reads an attribute name, which may carry one prefix (xmlns:s3).
func (p *xmlScan) attrName() (string, error) {
	n, err := p.name()
	if err != nil {
		return "", err
	}
	if p.i < len(p.b) && p.b[p.i] == ':' {
		p.i++
		m, err := p.name()
		if err != nil {
			return "", err
		}
		n += ":" + m
	}
	return n, nil
}

// endTag reads </name> at p.i.
func (p *xmlScan) endTag() (string, error) {
	p.i += 2
	name, err := p.name()
	if err != nil {
		return "", err
	}
	p.space()
	if p.i >= len(p.b) || p.b[p.i] != '>' {
		return "", fmt.Errorf("bad end tag </%s>", name)
	}
	p.i++
	return name, nil
}

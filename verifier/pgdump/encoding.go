package pgdump

import "strings"

// encodingNames are the names pg_restore accepts in an ENCODING entry, after
// it lowercases them and drops every character that is not a letter or a
// digit (PostgreSQL's encnames.c).
var encodingNames = map[string]bool{}

func init() {
	for _, n := range strings.Fields(`abc alt big5 euccn eucjis2004 eucjp euckr euctw gb18030 gbk
		iso88591 iso885910 iso885913 iso885914 iso885915 iso885916 iso88592 iso88593 iso88594
		iso88595 iso88596 iso88597 iso88598 iso88599 johab koi8 koi8r koi8u latin1 latin10
		latin2 latin3 latin4 latin5 latin6 latin7 latin8 latin9 mskanji muleinternal shiftjis
		shiftjis2004 sjis sqlascii tcvn tcvn5712 uhc unicode utf8 vscii win win1250 win1251
		win1252 win1253 win1254 win1255 win1256 win1257 win1258 win866 win874 win932 win936
		win949 win950 windows1250 windows1251 windows1252 windows1253 windows1254 windows1255
		windows1256 windows1257 windows1258 windows866 windows874 windows932 windows936
		windows949 windows950`) {
		encodingNames[n] = true
	}
}

// knownEncoding reports whether pg_restore would recognise name.
func knownEncoding(name string) bool {
	if len(name) >= 64 { // NAMEDATALEN
		return false
	}
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'A' && c <= 'Z':
			b.WriteByte(c + 'a' - 'A')
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
			b.WriteByte(c)
		}
	}
	return encodingNames[b.String()]
}

// checkSpecialEntry applies the checks pg_restore makes on the entries it
// interprets while reading the table of contents; it returns a message for
// an entry pg_restore would reject.
func checkSpecialEntry(desc string, defn string, defnNull bool) string {
	switch desc {
	case "ENCODING":
		if defnNull {
			return "ENCODING entry without a definition"
		}
		d := cString(defn)
		i := strings.IndexByte(d, '\'')
		if i < 0 {
			return "invalid ENCODING entry"
		}
		j := strings.IndexByte(d[i+1:], '\'')
		if j < 0 {
			return "invalid ENCODING entry"
		}
		if !knownEncoding(d[i+1 : i+1+j]) {
			return "ENCODING entry names an unknown encoding"
		}
	case "STDSTRINGS":
		if defnNull {
			return "STDSTRINGS entry without a definition"
		}
		d := cString(defn)
		i := strings.IndexByte(d, '\'')
		if i < 0 || !(strings.HasPrefix(d[i:], "'on'") || strings.HasPrefix(d[i:], "'off'")) {
			return "invalid STDSTRINGS entry"
		}
	}
	return ""
}

// cString is s up to its first NUL byte, as C code that reads it sees it.
func cString(s string) string {
	if i := strings.IndexByte(s, 0); i >= 0 {
		return s[:i]
	}
	return s
}

package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"strconv"
)

// The page structure check reads a bbolt file's pages with ordinary reads,
// not through bbolt: bbolt follows whatever page numbers a page holds,
// recursively and without remembering where it has been, so a page that
// names itself (or an ancestor) as a child makes every walk of its tree
// (a cursor, Stats, even bbolt's own Tx.Check) run until memory is gone,
// and the Go runtime ends such a process without a panic anyone could
// recover. The check visits each page at most once (a set of the pages
// reached, one bit a page, allocated as they are reached), and each inline
// bucket (a page inside a leaf value) at most once: bbolt never shares a
// value, and elements naming one inline bucket many times, nested, would
// make the walk take exponential time. It iterates instead of recursing
// (except into inline buckets, at most maxBucketDepth deep), bounds every
// count and offset a page states by the page and the file, refuses a page
// span (a page and its overflow) larger than maxPageSpan, and stops when
// the headers and elements of a page and its inline buckets add up to
// more bytes than the page span has, which no bbolt file does (so the
// work a page costs is proportional to its size). So no file, however made,
// can make it loop, take time more than proportional to the file's size,
// or allocate more than a few bytes for each element it reads plus one
// page span of at most maxPageSpan at a time.

// bbolt's on-disk format (go.etcd.io/bbolt/internal/common), version 2.
const (
	boltMagic       = 0xED0CDAED
	boltVersion     = 2
	pageHeaderSize  = 16
	branchElemSize  = 16
	leafElemSize    = 16
	bucketHeaderLen = 16 // root pgid, sequence
	flagBranch      = 0x01
	flagLeaf        = 0x02
	flagMeta        = 0x04
	flagFreelist    = 0x10
	leafFlagBucket  = 0x01
	noFreelist      = ^uint64(0)
	minPageSize     = 512
	maxPageSize     = 1 << 20
	// maxBucketDepth bounds nested buckets (signerd's store has one
	// level); inline buckets are checked by recursion inside the page
	// that holds them, so this bounds that recursion (the set of inline
	// buckets seen and the page's budget bound the work).
	maxBucketDepth = 16
	// maxTreeDepth bounds a bucket's page tree (bbolt's are a few levels
	// deep; bbolt's cursor recurses once a level).
	maxTreeDepth = 64
	// maxPageSpan bounds a page and its overflow pages, the largest
	// value a store holds plus its page: signerd's values (certificates,
	// requests, audit events) are each well under 1 MiB, and a span is
	// read into memory whole, so a count in the file must not choose it.
	maxPageSpan = 64 << 20
	// maxBucketName bounds how much of a bucket's name a finding quotes,
	// so that building names costs no more than the elements read.
	maxBucketName = 256
)

// DamageError is damage to a store file's page structure: reading its
// records would loop, crash or read outside the file, so none is read.
type DamageError struct {
	Finding
}

func (e *DamageError) Error() string {
	return "the file is damaged, its records were not read: " + e.Finding.String()
}

// ErrPageStructure is what every DamageError is (errors.Is).
var ErrPageStructure = errors.New("store file page structure damaged")

func (e *DamageError) Is(target error) bool { return target == ErrPageStructure }

type boltMeta struct {
	pageSize uint32
	root     uint64
	freelist uint64
	hwm      uint64 // pages in use: every page number is below it
	txid     uint64
}

// readMeta decodes the meta page at off; ok is false if it is not a
// valid one (bad magic, version or checksum).
func readMeta(f *os.File, off int64) (m boltMeta, ok bool) {
	var b [pageHeaderSize + 64]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		return m, false
	}
	if binary.LittleEndian.Uint16(b[8:])&flagMeta == 0 {
		return m, false
	}
	d := b[pageHeaderSize:]
	if binary.LittleEndian.Uint32(d[0:]) != boltMagic || binary.LittleEndian.Uint32(d[4:]) != boltVersion {
		return m, false
	}
	h := fnv.New64a()
	h.Write(d[:56])
	if h.Sum64() != binary.LittleEndian.Uint64(d[56:]) {
		return m, false
	}
	m = boltMeta{
		pageSize: binary.LittleEndian.Uint32(d[8:]),
		root:     binary.LittleEndian.Uint64(d[16:]),
		freelist: binary.LittleEndian.Uint64(d[32:]),
		hwm:      binary.LittleEndian.Uint64(d[40:]),
		txid:     binary.LittleEndian.Uint64(d[48:]),
	}
	return m, true
}

// pageWalk is one page (or inline page) still to check.
type pageWalk struct {
	id     uint64
	bucket string // the bucket whose tree holds it ("" for the root)
	depth  int    // bucket nesting
	level  int    // depth in its bucket's page tree
}

// pageSet is a set of page numbers, one bit a page, in words of 64 pages
// allocated as pages in them are reached: its size follows the pages
// reached, not the page count a (perhaps sparse) file claims.
type pageSet map[uint64]uint64

// mark adds page id and reports whether it was in the set already.
func (s pageSet) mark(id uint64) bool {
	w, bit := id/64, uint64(1)<<(id%64)
	was := s[w]&bit != 0
	s[w] |= bit
	return was
}

// treeCheck is the state one checkTreePage call of a real page shares
// with the inline buckets inside it.
type treeCheck struct {
	// budget is the bytes of page headers and elements still to be read
	// in the real page being checked and its inline buckets before they
	// hold more than the page's bytes, which only overlapping ones can.
	budget uint64
	// inlineSeen holds the offsets, in the real page being checked, of
	// the inline bucket pages already checked.
	inlineSeen map[int]bool
	push       func(pageWalk) error
}

// charge takes n bytes from the budget; false means it is spent.
func (c *treeCheck) charge(n uint64) bool {
	if n > c.budget {
		c.budget = 0
		return false
	}
	c.budget -= n
	return true
}

// checkPages checks the page structure of the bbolt file f of size size,
// from the meta page bbolt would use: every page number below the
// high-water mark and inside the file, every page reached at most once and
// of the type its parent expects, every element inside its page, the
// freelist inside its pages. It returns nil or a *DamageError; an error
// reading the file is returned as is.
func checkPages(f *os.File, size int64) error {
	damaged := func(bucket, format string, args ...any) error {
		if bucket == "" {
			bucket = "(file)" // the meta pages, the freelist, the root bucket's tree
		}
		return &DamageError{Finding{Bucket: bucket, Problem: fmt.Sprintf(format, args...)}}
	}
	// Meta page 0 is at offset 0 whatever the page size; page 1 follows
	// it at the page size page 0 states (bbolt does the same), or, if
	// page 0 is unreadable, at one of the usual sizes.
	var metas []boltMeta
	m0, ok0 := readMeta(f, 0)
	if ok0 {
		metas = append(metas, m0)
	}
	for _, ps := range []int64{int64(m0.pageSize), 4096, 16384, 65536} {
		if ps < minPageSize || ps > maxPageSize || (!ok0 && ps == int64(m0.pageSize)) {
			continue
		}
		if m1, ok := readMeta(f, ps); ok && m1.pageSize == uint32(ps) {
			metas = append(metas, m1)
			break
		}
	}
	if len(metas) == 0 {
		return damaged("", "not a bbolt file: both meta pages invalid")
	}
	m := metas[0]
	for _, o := range metas[1:] {
		if o.txid > m.txid {
			m = o
		}
	}
	ps := int64(m.pageSize)
	switch {
	case ps < minPageSize || ps > maxPageSize || ps&(ps-1) != 0:
		return damaged("", "meta page states a page size of %d bytes", ps)
	case m.hwm < 2 || m.hwm > uint64(size/ps):
		return damaged("", "the file is truncated or its meta page damaged: %d bytes hold %d pages, the meta page counts %d", size, size/ps, m.hwm)
	}
	seen := pageSet{}
	mark := seen.mark
	mark(0)
	mark(1)
	// read returns page id and its overflow pages, after checking they
	// lie below the high-water mark and were not reached before.
	buf := make([]byte, ps)
	read := func(bucket string, id uint64, from string) ([]byte, error) {
		if id < 2 || id >= m.hwm {
			return nil, damaged(bucket, "page %d%s is outside the file's %d pages", id, from, m.hwm)
		}
		if _, err := f.ReadAt(buf[:ps], int64(id)*ps); err != nil {
			return nil, fmt.Errorf("read page %d: %w", id, err)
		}
		if got := binary.LittleEndian.Uint64(buf); got != id {
			return nil, damaged(bucket, "page %d%s says it is page %d", id, from, got)
		}
		over := uint64(binary.LittleEndian.Uint32(buf[12:]))
		if over >= m.hwm-id {
			return nil, damaged(bucket, "page %d%s runs %d pages past the file's %d", id, from, over, m.hwm)
		}
		if (over+1)*uint64(ps) > maxPageSpan {
			return nil, damaged(bucket, "page %d%s claims %d overflow pages, %d bytes, more than a store's page span (%d bytes) holds", id, from, over, (over+1)*uint64(ps), maxPageSpan)
		}
		for i := uint64(0); i <= over; i++ {
			if mark(id + i) {
				return nil, damaged(bucket, "page %d%s is reached twice: a loop or a shared page in the page tree", id+i, from)
			}
		}
		span := (over + 1) * uint64(ps)
		if uint64(len(buf)) < span {
			buf = append(make([]byte, 0, span), buf[:ps]...)[:span]
		}
		p := buf[:span]
		if _, err := f.ReadAt(p[ps:], int64(id)*ps+ps); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("read page %d: %w", id, err)
		}
		return p, nil
	}
	if m.freelist != noFreelist {
		p, err := read("", m.freelist, " (the freelist)")
		if err != nil {
			return err
		}
		if binary.LittleEndian.Uint16(p[8:])&flagFreelist == 0 {
			return damaged("", "page %d, the freelist, is not a freelist page", m.freelist)
		}
		n, start := uint64(binary.LittleEndian.Uint16(p[10:])), uint64(pageHeaderSize)
		if n == 0xFFFF { // the real count is in the first element
			n, start = binary.LittleEndian.Uint64(p[pageHeaderSize:]), pageHeaderSize+8
		}
		if n > (uint64(len(p))-start)/8 {
			return damaged("", "page %d, the freelist, counts %d free pages, more than it holds", m.freelist, n)
		}
		for i := uint64(0); i < n; i++ {
			if id := binary.LittleEndian.Uint64(p[start+8*i:]); id < 2 || id >= m.hwm {
				return damaged("", "the freelist names page %d, outside the file's %d pages", id, m.hwm)
			}
		}
	}
	var stack []pageWalk
	// pushed holds the pages handed to the stack, so that a page named
	// twice is refused before it is pushed twice: the stack holds at most
	// one entry a page.
	pushed := pageSet{}
	push := func(child pageWalk) error {
		from := ""
		if child.bucket != "" {
			from = " of bucket " + strconv.Quote(child.bucket)
		}
		if child.id < 2 || child.id >= m.hwm {
			return damaged(child.bucket, "page %d%s is outside the file's %d pages", child.id, from, m.hwm)
		}
		if pushed.mark(child.id) {
			return damaged(child.bucket, "page %d%s is reached twice: a loop or a shared page in the page tree", child.id, from)
		}
		stack = append(stack, child)
		return nil
	}
	tc := &treeCheck{push: push}
	if err := push(pageWalk{id: m.root}); err != nil {
		return err
	}
	for len(stack) > 0 {
		w := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		from := ""
		if w.bucket != "" {
			from = " of bucket " + strconv.Quote(w.bucket)
		}
		p, err := read(w.bucket, w.id, from)
		if err != nil {
			return err
		}
		clear(tc.inlineSeen)
		tc.budget = uint64(len(p))
		if err := checkTreePage(p, 0, w, tc); err != nil {
			var de *DamageError
			if errors.As(err, &de) { // a page it names, found by push
				return de
			}
			return damaged(w.bucket, "page %d%s: %v", w.id, from, err)
		}
	}
	return nil
}

// checkTreePage checks a branch or leaf page (or an inline bucket's page
// at offset off of the real page being checked) and hands each page it
// names to c.push.
func checkTreePage(p []byte, off int, w pageWalk, c *treeCheck) error {
	if len(p) < pageHeaderSize {
		return errors.New("shorter than a page header")
	}
	if !c.charge(pageHeaderSize) {
		return errBudget
	}
	flags, count := binary.LittleEndian.Uint16(p[8:]), int(binary.LittleEndian.Uint16(p[10:]))
	elems := p[pageHeaderSize:]
	switch {
	case flags&flagBranch != 0:
		if count == 0 || count*branchElemSize > len(elems) {
			return fmt.Errorf("branch page counts %d elements, it holds room for %d", count, len(elems)/branchElemSize)
		}
		if !c.charge(uint64(count) * branchElemSize) {
			return errBudget
		}
		for i := 0; i < count; i++ {
			e := elems[i*branchElemSize:]
			pos, ksize := uint64(binary.LittleEndian.Uint32(e)), uint64(binary.LittleEndian.Uint32(e[4:]))
			if uint64(i*branchElemSize)+pos+ksize > uint64(len(elems)) {
				return fmt.Errorf("element %d's key lies outside the page", i)
			}
			if w.level+1 > maxTreeDepth {
				return fmt.Errorf("the page tree is more than %d levels deep", maxTreeDepth)
			}
			if err := c.push(pageWalk{id: binary.LittleEndian.Uint64(e[8:]), bucket: w.bucket, depth: w.depth, level: w.level + 1}); err != nil {
				return err
			}
		}
	case flags&flagLeaf != 0:
		if count*leafElemSize > len(elems) {
			return fmt.Errorf("leaf page counts %d elements, it holds room for %d", count, len(elems)/leafElemSize)
		}
		if !c.charge(uint64(count) * leafElemSize) {
			return errBudget
		}
		for i := 0; i < count; i++ {
			e := elems[i*leafElemSize:]
			eflags := binary.LittleEndian.Uint32(e)
			pos, ksize, vsize := uint64(binary.LittleEndian.Uint32(e[4:])), uint64(binary.LittleEndian.Uint32(e[8:])), uint64(binary.LittleEndian.Uint32(e[12:]))
			at := uint64(i*leafElemSize) + pos
			if at+ksize+vsize > uint64(len(elems)) {
				return fmt.Errorf("element %d's key or value lies outside the page", i)
			}
			if eflags&leafFlagBucket == 0 {
				continue
			}
			name := bucketName(w.bucket, elems[at:at+ksize])
			if w.depth+1 > maxBucketDepth {
				return fmt.Errorf("buckets nested more than %d deep", maxBucketDepth)
			}
			v := elems[at+ksize : at+ksize+vsize]
			if len(v) < bucketHeaderLen {
				return fmt.Errorf("bucket %q's header is %d bytes", name, len(v))
			}
			child := pageWalk{id: binary.LittleEndian.Uint64(v), bucket: name, depth: w.depth + 1}
			if child.id != 0 {
				if err := c.push(child); err != nil {
					return err
				}
				continue
			}
			// An inline bucket: its page, a leaf, is the rest of the value.
			// bbolt gives each its own value, so one named twice (by two
			// elements whose values overlap) is damage, and checking it
			// again would multiply the work at each level of nesting.
			inline := v[bucketHeaderLen:]
			inlineOff := off + pageHeaderSize + int(at+ksize) + bucketHeaderLen
			if c.inlineSeen[inlineOff] {
				return fmt.Errorf("inline bucket %q is named by two elements: its page at byte %d is shared", name, inlineOff)
			}
			if c.inlineSeen == nil {
				c.inlineSeen = make(map[int]bool)
			}
			c.inlineSeen[inlineOff] = true
			if len(inline) < pageHeaderSize || binary.LittleEndian.Uint16(inline[8:])&(flagLeaf|flagBranch) != flagLeaf {
				return fmt.Errorf("inline bucket %q is not a leaf page", name)
			}
			if err := checkTreePage(inline, inlineOff, child, c); err != nil {
				return fmt.Errorf("inline bucket %q: %w", name, err)
			}
		}
	default:
		return fmt.Errorf("type %#x where a branch or leaf page belongs", flags)
	}
	return nil
}

// errBudget is a page and its inline buckets holding more page headers
// and elements than the page has bytes: values that overlap, which bbolt
// never writes.
var errBudget = errors.New("the page and its inline buckets hold more headers and elements than its bytes: overlapping values")

// bucketName is the name of bucket key inside parent, cut to
// maxBucketName bytes for a finding.
func bucketName(parent string, key []byte) string {
	if len(key) > maxBucketName {
		key = key[:maxBucketName]
	}
	name := string(key)
	if parent != "" {
		name = parent + "/" + name
	}
	if len(name) > maxBucketName {
		name = name[:maxBucketName] + "..."
	}
	return name
}

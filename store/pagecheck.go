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
// seen, one bit a page, bounded by the file's size), iterates instead of
// recursing, and bounds every count and offset a page states by the page
// and the file, so no file, however made, can make it loop or allocate
// more than the file's size in bits plus one page span at a time.

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
	// level); inline buckets are walked on the stack of a page already
	// counted, so this is what bounds them.
	maxBucketDepth = 16
	// maxTreeDepth bounds a bucket's page tree (bbolt's are a few levels
	// deep; bbolt's cursor recurses once a level).
	maxTreeDepth = 64
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
	seen := make([]uint64, (m.hwm+63)/64)
	mark := func(id uint64) bool { // reports whether id was seen already
		w, bit := id/64, uint64(1)<<(id%64)
		was := seen[w]&bit != 0
		seen[w] |= bit
		return was
	}
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
	stack := []pageWalk{{id: m.root}}
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
		if err := checkTreePage(p, w, func(child pageWalk) { stack = append(stack, child) }); err != nil {
			return damaged(w.bucket, "page %d%s: %v", w.id, from, err)
		}
	}
	return nil
}

// checkTreePage checks a branch or leaf page (or an inline bucket's page)
// and hands each page it names to push.
func checkTreePage(p []byte, w pageWalk, push func(pageWalk)) error {
	if len(p) < pageHeaderSize {
		return errors.New("shorter than a page header")
	}
	flags, count := binary.LittleEndian.Uint16(p[8:]), int(binary.LittleEndian.Uint16(p[10:]))
	elems := p[pageHeaderSize:]
	switch {
	case flags&flagBranch != 0:
		if count == 0 || count*branchElemSize > len(elems) {
			return fmt.Errorf("branch page counts %d elements, it holds room for %d", count, len(elems)/branchElemSize)
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
			push(pageWalk{id: binary.LittleEndian.Uint64(e[8:]), bucket: w.bucket, depth: w.depth, level: w.level + 1})
		}
	case flags&flagLeaf != 0:
		if count*leafElemSize > len(elems) {
			return fmt.Errorf("leaf page counts %d elements, it holds room for %d", count, len(elems)/leafElemSize)
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
			name := string(elems[at : at+ksize])
			if w.bucket != "" {
				name = w.bucket + "/" + name
			}
			if w.depth+1 > maxBucketDepth {
				return fmt.Errorf("buckets nested more than %d deep", maxBucketDepth)
			}
			v := elems[at+ksize : at+ksize+vsize]
			if len(v) < bucketHeaderLen {
				return fmt.Errorf("bucket %q's header is %d bytes", name, len(v))
			}
			child := pageWalk{id: binary.LittleEndian.Uint64(v), bucket: name, depth: w.depth + 1}
			if child.id != 0 {
				push(child)
				continue
			}
			// An inline bucket: its page, a leaf, is the rest of the value.
			inline := v[bucketHeaderLen:]
			if len(inline) < pageHeaderSize || binary.LittleEndian.Uint16(inline[8:])&(flagLeaf|flagBranch) != flagLeaf {
				return fmt.Errorf("inline bucket %q is not a leaf page", name)
			}
			if err := checkTreePage(inline, child, push); err != nil {
				return fmt.Errorf("inline bucket %q: %w", name, err)
			}
		}
	default:
		return fmt.Errorf("type %#x where a branch or leaf page belongs", flags)
	}
	return nil
}

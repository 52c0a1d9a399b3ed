package copytree

// fileSet is the files of a tree that landed in this copy, by their path
// in the tree, each with its identity where it is known: a hard link may
// name only one of them, never a file the destination held before. A
// sender picks the paths, so the set is bounded, the cost of each entry
// counted with its path's bytes; past the bound it takes no more, and a
// link to a file it does not hold is refused.
type fileSet struct {
	ids   map[string]FileID
	bytes int
	full  bool
}

// maxFileSetBytes bounds a fileSet: paths and a fixed cost per entry.
const maxFileSetBytes = 4 << 20

// fileSetEntryCost is what one entry of the map holds besides its path's
// bytes: the string header, the identity and the map's own share.
const fileSetEntryCost = 64

func (s *fileSet) reset() { *s = fileSet{} }

// add notes that p landed, as the file id.
func (s *fileSet) add(p []byte, id FileID) {
	if _, ok := s.ids[string(p)]; ok {
		s.ids[string(p)] = id
		return
	}
	cost := len(p) + fileSetEntryCost
	if s.bytes+cost > maxFileSetBytes {
		s.full = true
		return
	}
	if s.ids == nil {
		s.ids = map[string]FileID{}
	}
	s.ids[string(p)] = id
	s.bytes += cost
}

// remove forgets p: something else took its name.
func (s *fileSet) remove(p []byte) {
	if _, ok := s.ids[string(p)]; ok {
		delete(s.ids, string(p))
		s.bytes -= len(p) + fileSetEntryCost
	}
}

// get returns the identity p landed as, if the set holds it.
func (s *fileSet) get(p []byte) (FileID, bool) {
	id, ok := s.ids[string(p)]
	return id, ok
}

// refusal says why a hard link to p, which the set does not hold, is
// not made.
func (s *fileSet) refusal() string {
	if s.full {
		return "which is not among the files of this copy that cork remembers (it remembers 4 MiB of their names)"
	}
	return "which is not a file that this copy wrote"
}

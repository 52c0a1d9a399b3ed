//go:build linux

package main

import (
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

var (
	copyMiB    = flag.Int("copy-mib", 256, "MiB of the one-file rows of the copy table")
	copyFiles  = flag.Int("copy-files", 10000, "files in the many-files rows of the copy table")
	copyRounds = flag.Int("copy-rounds", 3, "rounds of the copy table")
)

// copyWay is one way of moving the same files, timed.
type copyWay struct {
	name string
	run  func(src, dest string) *exec.Cmd
	took []time.Duration
}

// printCopy measures cork cp against the ways users copy without it: the
// bytes through cork exec (cat, or tar for a tree) and, for the floor, the
// same copy on this machine with no tool between.
func printCopy(w io.Writer, cork, url, dir string) {
	progress("copy")
	check(os.MkdirAll(dir, 0o755))
	file := filepath.Join(dir, "one.bin")
	f, err := os.Create(file)
	check(err)
	_, err = io.CopyN(f, rand.Reader, int64(*copyMiB)<<20)
	check(err)
	f.Close()
	tree := filepath.Join(dir, "tree")
	for i := range *copyFiles {
		p := filepath.Join(tree, fmt.Sprintf("d%03d", i/100), fmt.Sprintf("f%05d.txt", i))
		if i%100 == 0 {
			check(os.MkdirAll(filepath.Dir(p), 0o755))
		}
		check(os.WriteFile(p, fmt.Appendf(nil, "file %d: a few hundred bytes of source, as a checkout holds %0300d\n", i, i), 0o644))
	}
	treeBytes := dirBytes(tree)
	sh := func(script string, args ...string) *exec.Cmd {
		return exec.Command("sh", append([]string{"-c", script, "sh"}, args...)...)
	}
	exec_ := func(args ...string) []string { return append([]string{cork, "exec", "--connect", url}, args...) }
	q := func(s string) string { return "'" + s + "'" } // the bench's own paths, no quotes in them

	tables := []struct {
		title string
		src   string
		bytes int64
		files int
		ways  []*copyWay
	}{
		{"one file in", file, int64(*copyMiB) << 20, 1, []*copyWay{
			{name: "floor: cat on this machine", run: func(s, d string) *exec.Cmd { return sh(`cat "$1" >"$2"/one.bin`, s, d) }},
			{name: "cork cp FILE :DIR", run: func(s, d string) *exec.Cmd { return exec.Command(cork, "cp", "-q", "--connect", url, s, ":"+d) }},
			{name: "cork exec -i -- sh -c 'cat >FILE'", run: func(s, d string) *exec.Cmd {
				return sh(`exec "$@" <`+q(s), exec_("-i", "--", "sh", "-c", "cat >"+q(d+"/one.bin"))...)
			}},
		}},
		{"one file out", file, int64(*copyMiB) << 20, 1, []*copyWay{
			{name: "floor: cat on this machine", run: func(s, d string) *exec.Cmd { return sh(`cat "$1" >"$2"/one.bin`, s, d) }},
			{name: "cork cp :FILE DIR", run: func(s, d string) *exec.Cmd { return exec.Command(cork, "cp", "-q", "--connect", url, ":"+s, d) }},
			{name: "cork exec -- cat FILE", run: func(s, d string) *exec.Cmd {
				return sh(`exec "$@" >`+q(d+"/one.bin"), exec_("--", "cat", s)...)
			}},
		}},
		{fmt.Sprintf("%d files in", *copyFiles), tree, treeBytes, *copyFiles, []*copyWay{
			{name: "floor: tar | tar on this machine", run: func(s, d string) *exec.Cmd { return sh(`tar -C "$1" -c . | tar -C "$2" -x`, s, d) }},
			{name: "cork cp DIR :DIR", run: func(s, d string) *exec.Cmd { return exec.Command(cork, "cp", "-q", "--connect", url, s+"/.", ":"+d) }},
			{name: "tar | cork exec -i -- tar -x", run: func(s, d string) *exec.Cmd {
				return sh(`tar -C "$1" -c . | "$2" exec -i --connect "$3" -- tar -C "$4" -x`, s, cork, url, d)
			}},
		}},
		{fmt.Sprintf("%d files out", *copyFiles), tree, treeBytes, *copyFiles, []*copyWay{
			{name: "floor: tar | tar on this machine", run: func(s, d string) *exec.Cmd { return sh(`tar -C "$1" -c . | tar -C "$2" -x`, s, d) }},
			{name: "cork cp :DIR DIR", run: func(s, d string) *exec.Cmd { return exec.Command(cork, "cp", "-q", "--connect", url, ":"+s+"/.", d) }},
			{name: "cork exec -- tar -c | tar -x", run: func(s, d string) *exec.Cmd {
				return sh(`"$2" exec --connect "$3" -- tar -C "$1" -c . | tar -C "$4" -x`, s, cork, url, d)
			}},
		}},
	}
	for round := range *copyRounds {
		for _, tb := range tables {
			for _, w := range tb.ways {
				progress("copy round %d: %s: %s", round, tb.title, w.name)
				dest := filepath.Join(dir, "dest")
				check(os.RemoveAll(dest))
				check(os.MkdirAll(dest, 0o755))
				exec.Command("sync").Run() // the last row's writeback is not this one's
				w.took = append(w.took, timed(w.run(tb.src, dest)))
			}
		}
	}
	os.RemoveAll(filepath.Join(dir, "dest"))

	fmt.Fprintf(w, "\n### Copying files\n\n%d rounds, the ways interleaved in each; medians, the slowest run in brackets. One file: %d MiB of random bytes. Many files: %d files of about 400 bytes in 100 directories (%.1f MiB). Guest and host are this machine's disk here, so the floor is a copy with no tool between.\n\n",
		*copyRounds, *copyMiB, *copyFiles, float64(treeBytes)/(1<<20))
	fmt.Fprintln(w, "| copy | way | MiB/s | files/s | ÷ floor |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	for _, tb := range tables {
		floor := median(tb.ways[0].took)
		for _, way := range tb.ways {
			med, slow := median(way.took), slices.Max(way.took)
			fmt.Fprintf(w, "| %s | %s | %s (%s) | %.0f (%.0f) | %.2f |\n", tb.title, strings.ReplaceAll(way.name, "|", "\\|"),
				rate(float64(tb.bytes)/(1<<20)/med.Seconds()), rate(float64(tb.bytes)/(1<<20)/slow.Seconds()),
				float64(tb.files)/med.Seconds(), float64(tb.files)/slow.Seconds(), floor.Seconds()/med.Seconds())
		}
	}
}

// rate spells MiB/s with the digits that mean something.
func rate(v float64) string {
	if v < 10 {
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

func dirBytes(root string) int64 {
	var n int64
	filepath.Walk(root, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

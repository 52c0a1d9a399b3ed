// Command goempty does nothing. The benchmark times it beside cork's
// start-up: what any Go program, built as cork is, takes to start and exit
// on the machine, before it does anything.
package main

func main() {}

// Command ward is a DICOM archive that is closed by default.
package main

import (
	"os"

	"github.com/ward-pacs/ward/internal/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:])) }

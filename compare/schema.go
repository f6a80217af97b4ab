package compare

import (
	"bytes"
	_ "embed"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// ReportJSONSchema is the JSON Schema (draft 2020-12) of report.json.
//
//go:embed report.schema.json
var ReportJSONSchema []byte

var reportSchema = sync.OnceValues(func() (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(ReportJSONSchema))
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("report.schema.json", doc); err != nil {
		return nil, err
	}
	return c.Compile("report.schema.json")
})

// ValidateReport checks a report.json document against ReportJSONSchema.
func ValidateReport(r io.Reader) error {
	s, err := reportSchema()
	if err != nil {
		return fmt.Errorf("compare: schema: %w", err)
	}
	doc, err := jsonschema.UnmarshalJSON(r)
	if err != nil {
		return fmt.Errorf("compare: report: %w", err)
	}
	if err := s.Validate(doc); err != nil {
		return fmt.Errorf("compare: report does not match %s: %w", ReportSchema, err)
	}
	return nil
}

// ValidateReportFile checks a report.json file against ReportJSONSchema.
func ValidateReportFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("compare: %w", err)
	}
	defer f.Close()
	return ValidateReport(f)
}

package detect

import (
	"time"

	"github.com/ferrygw/ferry/gateway/rules/record"
)

// exprTestTime is the event time of exprTestRecord's records (the same
// as in package expr's tests, where these helpers come from).
var exprTestTime = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

func exprTestRecord(fields map[string]any) *record.Record {
	return &record.Record{Key: "k1", Time: exprTestTime, Source: "dev1", Topic: "sensors/dev1", Fields: fields}
}

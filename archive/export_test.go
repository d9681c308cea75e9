package archive

// VerifyRow exposes verifyRow to the archive_test package.
var VerifyRow = (*Archive).verifyRow

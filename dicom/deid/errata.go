package deid

// errata are the rows of Table E.1-1 that editions after Edition changed
// (correction proposals since), as the later edition has them: they
// replace the transcribed rows. TestTableMatchesReference checks each
// against the reference copy, so the list cannot drift from the standard.
// Regenerating the table from a later edition makes them redundant.
var errata = []row{
	{"(0010,0020)", "Patient ID", "Z/D", "", "", "", "", "", "", "", "", "", ""},
	{"(300A,00B2)", "Treatment Machine Name", "X/Z", "", "", "K", "", "", "", "", "", "", ""},
	{"(3010,0077)", "Treatment Site", "X/D", "", "", "", "", "", "", "", "C", "", ""},
	{"(3006,0008)", "Structure Set Date", "Z", "", "", "", "", "", "K", "C", "", "", ""},
	{"(3006,0009)", "Structure Set Time", "Z", "", "", "", "", "", "K", "C", "", "", ""},
	{"(3006,0026)", "ROI Name", "Z", "", "", "", "", "", "", "", "C", "", ""},
	{"(3006,00A6)", "ROI Interpreter", "Z", "", "", "", "", "", "", "", "", "", ""},
	{"(0020,3401)", "Modifying Device ID", "X", "", "", "K", "", "", "", "", "", "", ""},
	{"(0040,0241)", "Performed Station AE Title", "X", "", "", "C", "", "", "", "", "", "", ""},
	{"(0040,0001)", "Scheduled Station AE Title", "X", "", "", "C", "", "", "", "", "", "", ""},
	{"(0032,1021)", "Scheduled Study Location AE Title", "X", "", "", "C", "", "", "", "", "", "", ""},
	{"(0008,1120)", "Referenced Patient Sequence", "X", "", "K", "", "", "", "", "", "", "", ""},
	// Rows of CP 2038 (and its neighbours) that the 2020c source carries
	// as a commented-out draft; final in later editions.
	{"(3006,0002)", "Structure Set Label", "D", "", "", "", "", "", "", "", "C", "", ""},
	{"(3006,0004)", "Structure Set Name", "X", "", "", "", "", "", "", "", "C", "", ""},
	{"(3006,0006)", "Structure Set Description", "X", "", "", "", "", "", "", "", "C", "", ""},
	{"(3006,0028)", "ROI Description", "X", "", "", "", "", "", "", "", "C", "", ""},
	{"(3006,0038)", "ROI Generation Description", "X", "", "", "", "", "", "", "", "C", "", ""},
	{"(3006,0085)", "ROI Observation Label", "X", "", "", "", "", "", "", "", "C", "", ""},
	{"(3006,0088)", "ROI Observation Description", "X", "", "", "", "", "", "", "", "C", "", ""},
	{"(0400,0551)", "Nonconforming Modified Attributes Sequence", "X", "", "", "", "", "", "", "", "", "", ""},
	{"(0400,0552)", "Nonconforming Data Element Value", "X", "", "", "", "", "", "", "", "", "", ""},
}

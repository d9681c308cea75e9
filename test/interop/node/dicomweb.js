// Drives Ward's DICOMweb with dicomweb-client, OHIF's own library, the way
// a viewer does: STOW one Part 10 file, search for its study, series and
// instances, read the series metadata and the instance's first frame.
// It prints one JSON object on stdout; test/interop/dicomweb_client_test.go
// checks it. Usage: node dicomweb.js BASE_URL FILE (the bearer token in
// WARD_TOKEN, so that it is not on a command line).
'use strict';

const fs = require('fs');
global.XMLHttpRequest = require('xhr2');
const { api } = require('dicomweb-client');

function text(v, tag) {
  const e = v[tag];
  return e && e.Value && e.Value.length ? e.Value[0] : undefined;
}

async function main() {
  const [url, file] = process.argv.slice(2);
  const token = process.env.WARD_TOKEN || '';
  const client = new api.DICOMwebClient({
    url,
    headers: token ? { Authorization: 'Bearer ' + token } : {},
  });
  const out = {};
  const step = async (name, fn) => {
    try {
      out[name] = await fn();
    } catch (e) {
      out[name + 'Error'] = String((e && (e.status || e.message)) || e);
    }
  };
  const buf = fs.readFileSync(file);
  const ab = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength);
  await step('store', async () => {
    const r = await client.storeInstances({ datasets: [ab] });
    return r === undefined ? null : String(r).slice(0, 4096);
  });
  await step('studies', async () =>
    (await client.searchForStudies({ queryParams: { limit: 10 } })).map((s) => ({
      study: text(s, '0020000D'),
      patientID: text(s, '00100020'),
      instances: text(s, '00201208'),
    })));
  const study = out.studies && out.studies.length ? out.studies[0].study : process.env.WARD_STUDY;
  await step('series', async () =>
    (await client.searchForSeries({ studyInstanceUID: study })).map((s) => ({
      series: text(s, '0020000E'),
      modality: text(s, '00080060'),
    })));
  const series = out.series && out.series.length ? out.series[0].series : undefined;
  await step('instances', async () =>
    (await client.searchForInstances({ studyInstanceUID: study, seriesInstanceUID: series })).map((s) => ({
      sop: text(s, '00080018'),
      sopClass: text(s, '00080016'),
    })));
  const sop = out.instances && out.instances.length ? out.instances[0].sop : undefined;
  await step('metadata', async () =>
    (await client.retrieveSeriesMetadata({ studyInstanceUID: study, seriesInstanceUID: series })).map((m) => ({
      sop: text(m, '00080018'),
      rows: text(m, '00280010'),
      columns: text(m, '00280011'),
      bitsAllocated: text(m, '00280100'),
      samplesPerPixel: text(m, '00280002'),
      pixelData: m['7FE00010'] ? Object.keys(m['7FE00010']).filter((k) => k !== 'vr') : null,
    })));
  await step('frames', async () =>
    (await client.retrieveInstanceFrames({
      studyInstanceUID: study,
      seriesInstanceUID: series,
      sopInstanceUID: sop,
      frameNumbers: [1],
    })).map((f) => Buffer.from(f).toString('base64')));
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e) => {
  process.stderr.write(String((e && e.stack) || e) + '\n');
  process.exit(1);
});

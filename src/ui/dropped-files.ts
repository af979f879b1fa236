/** A file from a drop or a picker, with its path inside the chosen folder (`run/logs/events…`). */
export interface PickedFile {
  readonly path: string;
  readonly file: File;
}

/** What was dropped: every file, folders walked, and whether any folder was among them. */
export async function pickedFromDrop(transfer: DataTransfer): Promise<{ files: PickedFile[]; folders: string[] }> {
  const entries = [...transfer.items].map((item) => item.webkitGetAsEntry()).filter((e): e is FileSystemEntry => e !== null);
  const files = (await Promise.all(entries.map(walk))).flat();
  if (files.length === 0) files.push(...[...transfer.files].map((file) => ({ path: file.name, file })));
  return { files, folders: entries.filter((e) => e.isDirectory).map((e) => e.name) };
}

/** What a file input gave: a folder picker fills webkitRelativePath, a file picker does not. */
export function pickedFromInput(input: HTMLInputElement): PickedFile[] {
  return [...(input.files ?? [])].map((file) => ({ path: file.webkitRelativePath || file.name, file }));
}

async function walk(entry: FileSystemEntry): Promise<PickedFile[]> {
  if (entry.isFile) {
    const file = await new Promise<File>((resolve, reject) => (entry as FileSystemFileEntry).file(resolve, reject));
    return [{ path: entry.fullPath.replace(/^\//, ''), file }];
  }
  const reader = (entry as FileSystemDirectoryEntry).createReader();
  const children: FileSystemEntry[] = [];
  // readEntries hands out at most ~100 entries per call: ask until it returns none.
  for (;;) {
    const batch = await new Promise<FileSystemEntry[]>((resolve, reject) => reader.readEntries(resolve, reject));
    if (batch.length === 0) break;
    children.push(...batch);
  }
  return (await Promise.all(children.map(walk))).flat();
}

/** The model's name: the folder's name when a folder was chosen, else "model". */
export function modelNameFrom(files: readonly PickedFile[]): string {
  const path = files.find((f) => f.path.includes('/'))?.path;
  return path ? path.slice(0, path.indexOf('/')) : 'model';
}
